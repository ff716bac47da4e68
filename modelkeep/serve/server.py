"""``run_server(settings)``: what ``modelkeep serve`` does -- load the models, then run uvicorn.

One worker serves the app built here, so a bad source fails before the port is bound. With several
workers the models are loaded once here first (the same early failure), the settings travel to the
workers as JSON in the environment, each worker builds its own app (``app.app_from_environment``) and
loads its own private copy, and Prometheus values are shared through ``PROMETHEUS_MULTIPROC_DIR``.
Uvicorn's own access log is off: the serving middleware writes one JSON line per request instead.

Eager PyTorch's OpenMP threads are told to sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, unless already set),
before torch is first imported: by default they spin, and on a machine whose cores are shared with the event
loop, the other workers or other jobs, spinning threads starve the very thread they wait for. Measured with the
digits CNN (eager, batching off) on 2 busy cores, 64 clients: 32 and 209 req/s spinning, 704 and 718 req/s
passive; one client: about the same either way.
"""
from __future__ import annotations

import os
import tempfile

from .metrics import MULTIPROCESS_VARIABLE
from .middleware import configure_access_log
from .settings import ENVIRONMENT_VARIABLE, ServeSettings


def run_server(settings: ServeSettings, *, log_level: str = "info", access_log: bool = True) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM: in-flight requests finish first)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before any import of it
    import uvicorn

    if access_log:
        configure_access_log()
    options = {"host": settings.host, "port": settings.port, "log_level": log_level, "access_log": False}
    if settings.workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), **options)
        return
    from .table import ModelTable

    ModelTable.load(settings)  # fail here, once, rather than in every worker
    os.environ[ENVIRONMENT_VARIABLE] = settings.to_environment()
    os.environ["MODELKEEP_SERVE_ACCESS_LOG"] = "1" if access_log else ""
    if not os.environ.get(MULTIPROCESS_VARIABLE):
        os.environ[MULTIPROCESS_VARIABLE] = tempfile.mkdtemp(prefix="modelkeep-metrics-")
    uvicorn.run("modelkeep.serve.app:app_from_environment", factory=True, workers=settings.workers, **options)


__all__ = ["run_server"]
