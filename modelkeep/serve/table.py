"""The table of served models: name -> ``ServedModel``, loaded only from the sources named at start-up.

``ModelTable.load(settings)`` loads every source (two sources of one name are refused). Each model gets
its backend here (``onnx_runner.choose_backend``: onnxruntime when its ONNX export passes parity, eager
PyTorch otherwise, logged with the reason) and its batchers, wired to the server's metrics.
``follow_aliases`` polls the registry aliases among the sources (``registry://name@production``) every few
seconds; when an alias moves, the new version is fetched and loaded in a worker thread, then swapped in:
requests that arrive after the swap go to it, and the requests already queued on the old version finish
there before it is closed. None is dropped.
"""
from __future__ import annotations

import asyncio
import difflib
import logging
from functools import partial
from typing import Callable

from ..errors import ConfigError, ModelNotFoundError
from .batching import Batcher
from .models import ServedModel, infer_rows, load_source, predict_rows
from .onnx_runner import choose_backend
from .settings import ServeSettings

LOGGER = logging.getLogger("modelkeep.serve")
KINDS = {"infer": infer_rows, "predict": predict_rows}


class ModelTable:
    def __init__(self, settings: ServeSettings, on_batch: Callable[[str, int, float], None] | None = None) -> None:
        self.settings, self.on_batch = settings, on_batch
        self._models: dict[str, ServedModel] = {}

    @classmethod
    def load(cls, settings: ServeSettings,
             on_batch: Callable[[str, int, float], None] | None = None) -> "ModelTable":
        table = cls(settings, on_batch)
        for source in settings.sources:
            served = table._load(source)
            if served.name in table._models:
                raise ConfigError(f"two sources are both named {served.name!r} ({table._models[served.name].source!r}"
                                  f" and {source!r}); serve them from files with different names")
            table._models[served.name] = served
        return table

    def _load(self, source: str) -> ServedModel:
        settings = self.settings
        served = load_source(source, allow_nonfinite=settings.allow_nonfinite, trust_code=settings.trust_code,
                             chunk_rows=settings.max_batch_size, device=settings.device)
        served.backend = choose_backend(served.model, backend=settings.backend, threads=_onnx_threads(settings),
                                        chunk_rows=settings.max_batch_size, device=settings.device, where=source)
        log = LOGGER.warning if served.backend.reason else LOGGER.info
        log("model %s (%s): %s", served.name, served.version, served.backend.describe())
        for kind, runner in KINDS.items():
            served.batchers[kind] = Batcher(partial(runner, served), max_batch_size=settings.max_batch_size,
                                            max_delay=settings.max_queue_delay_ms / 1000, executor=served.executor,
                                            on_batch=partial(self._report, served.name))
        return served

    def _report(self, name: str, rows: int, jobs: int, seconds: float) -> None:
        if self.on_batch is not None:  # set by the app after loading: the metrics it reports to
            self.on_batch(name, rows, seconds)

    def names(self) -> frozenset[str]:
        return frozenset(self._models)

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model served as ``name`` (at ``version``, when given); ``ModelNotFoundError`` otherwise."""
        served = self._models.get(name)
        if served is None:
            close = difflib.get_close_matches(name, list(self._models), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; this server has {', '.join(sorted(self._models))}"
            raise ModelNotFoundError(f"no model named {name[:100]!r}{hint}")
        if version is not None and version != served.version:
            raise ModelNotFoundError(f"model {name!r} has no version {version[:100]!r}; it serves version "
                                     f"{served.version!r}")
        return served

    async def follow_aliases(self, interval: float) -> None:
        """Poll the registry aliases among the sources forever (cancel the task to stop)."""
        followed = [model.source for model in self._models.values() if _is_alias(model.source)]
        while followed:
            await asyncio.sleep(interval)
            for source in followed:
                try:
                    await self.refresh(source)
                except Exception as exc:  # noqa: BLE001 - a registry hiccup must not stop serving the old version
                    LOGGER.warning("could not follow %s: %s: %s", source, type(exc).__name__, exc)

    async def refresh(self, source: str) -> bool:
        """Load the version ``source``'s alias points at now, if it moved; whether it did."""
        from .models import registry_name

        name = registry_name(source)
        current = self._models[name]
        version = await asyncio.to_thread(_resolve, source)
        if version == current.version:
            return False
        fresh = await asyncio.to_thread(self._load, source)
        self._models[name] = fresh
        LOGGER.info("model %s: version %s replaces %s", name, fresh.version, current.version)
        await current.close()
        return True

    async def close(self) -> None:
        for served in self.models():
            await served.close()
        self.closed = True

    def reopen(self) -> None:
        """After ``close`` (a second lifespan of the same app): every model takes requests again."""
        if getattr(self, "closed", False):
            for served in self.models():
                served.reopen()
            self.closed = False


def _onnx_threads(settings: ServeSettings) -> int:
    """onnxruntime's intra-op threads: as set, or the cores shared out among several workers (0: its default)."""
    import os

    if settings.onnx_threads is not None:
        return settings.onnx_threads
    return max(1, (os.cpu_count() or 1) // settings.workers) if settings.workers > 1 else 0


def _is_alias(source: str) -> bool:
    from ..registry.base import parse_ref
    from ..registry.refs import is_registry_url, split_url

    return is_registry_url(source) and parse_ref(split_url(source)[1])[2] is not None


def _resolve(source: str) -> str:
    """The version ``source``'s ref names now, as served (12 digits; one registry lookup, nothing fetched)."""
    from ..registry.api import open_registry
    from ..registry.refs import split_url

    location, ref = split_url(source)
    return open_registry(location).resolve(ref)[1][:12]


__all__ = ["ModelTable"]
