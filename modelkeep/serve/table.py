"""The table of served models: name -> ``ServedModel``, loaded only from the sources named at start-up.

``ModelTable.load(settings)`` loads every source (two sources of one name are refused). Each model gets
its backend here (``onnx_runner.choose_backend``: onnxruntime when its ONNX export passes parity, eager
PyTorch otherwise, logged with the reason) and its batchers, wired to the server's metrics.
``follow_aliases`` polls the registry aliases among the sources (``registry://name@production``) every few
seconds; when an alias moves, the new version is fetched and loaded in a worker thread, then swapped in:
requests that arrive after the swap go to it, and the requests already queued on the old version finish
there before it is closed. None is dropped. With ``require_signature`` a new version that does not verify is
refused (logged once per version) and the old one keeps serving.

The management endpoints (``repository.py``) act through ``index``, ``load_name`` and ``unload_name``, which
know only the names given at start-up: ``load_name`` reloads a name from its own start-up source (the file
read again, or the alias resolved again), never from a path a request supplies.
"""
from __future__ import annotations

import asyncio
import difflib
import logging
from functools import partial
from typing import Callable

from ..errors import ConfigError, DataError, ModelNotFoundError, SignatureError
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
        self._sources: dict[str, str] = {}  # every name given at start-up -> its source, loaded or not
        self._refused: dict[str, str] = {}  # source -> the version refused last (logged once)
        self._lock = asyncio.Lock()  # one swap at a time: an alias move, a load, an unload

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
            table._sources[served.name] = source
        return table

    def _load(self, source: str) -> ServedModel:
        settings = self.settings
        served = load_source(source, allow_nonfinite=settings.allow_nonfinite, trust_code=settings.trust_code,
                             chunk_rows=settings.max_batch_size, device=settings.device,
                             require_signature=settings.require_signature)
        served.backend = choose_backend(served.model, backend=settings.backend, threads=_onnx_threads(settings),
                                        chunk_rows=settings.max_batch_size, device=settings.device, where=source)
        log = LOGGER.warning if served.backend.reason else LOGGER.info
        log("model %s (%s): %s", served.name, served.version, served.backend.describe())
        for kind, runner in KINDS.items():
            served.batchers[kind] = Batcher(partial(runner, served), max_batch_size=settings.max_batch_size,
                                            max_delay=settings.max_queue_delay_us / 1e6, executor=served.executor,
                                            preferred_batch_sizes=settings.preferred_batch_sizes,
                                            on_batch=partial(self._report, served.name))
        return served

    def _report(self, name: str, rows: int, jobs: int, seconds: float) -> None:
        if self.on_batch is not None:  # set by the app after loading: the metrics it reports to
            self.on_batch(name, rows, seconds)

    def names(self) -> frozenset[str]:
        """Every name given at start-up, loaded or not (bounded: the metrics label them)."""
        return frozenset(self._sources)

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model served as ``name`` (at ``version``, when given); ``ModelNotFoundError`` otherwise."""
        served = self._models.get(name)
        if served is None and name in self._sources:
            raise ModelNotFoundError(f"model {name!r} is unloaded; load it again with POST "
                                     f"/v2/repository/models/{name}/load")
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
        current = self._models.get(name)
        version = await asyncio.to_thread(_resolve, source)
        if current is None or version == current.version or self._refused.get(source) == version:
            return False  # unloaded by the management API, unchanged, or a version already refused
        try:
            fresh = await asyncio.to_thread(self._load, source)
        except SignatureError as exc:
            self._refused[source] = version
            LOGGER.warning("model %s: refused version %s of %s, version %s keeps serving: %s", name, version,
                           source, current.version, " ".join(str(exc).split()))
            return False
        return await self._swap(name, fresh)

    async def _swap(self, name: str, fresh: ServedModel) -> bool:
        """Serve ``fresh`` as ``name``; the requests queued on the old model finish there, then it closes."""
        async with self._lock:
            current = self._models.get(name)
            self._models[name] = fresh
        if current is not None:
            LOGGER.info("model %s: version %s replaces %s", name, fresh.version, current.version)
            await current.close()
        else:
            LOGGER.info("model %s: version %s loaded", name, fresh.version)
        return True

    def index(self) -> list[dict[str, str]]:
        """The model-repository index: every start-up name, its version and whether it is loaded."""
        entries = []
        for name in sorted(self._sources):
            served = self._models.get(name)
            entries.append({"name": name, "version": served.version if served else "",
                            "state": "READY" if served else "UNAVAILABLE", "reason": "" if served else "unloaded"})
        return entries

    async def load_name(self, name: str) -> ServedModel:
        """(Re)load ``name`` from its start-up source -- only a name given at start-up -- and serve it."""
        source = self._start_up_source(name)
        try:
            fresh = await asyncio.to_thread(self._load, source)
        except Exception as exc:  # noqa: BLE001 - a failed load leaves what serves as it was: say so, as Triton does
            current = self._models.get(name)
            now = f"version {current.version} keeps serving" if current else "it stays unloaded"
            LOGGER.warning("model %s: load from %s failed, %s", name, source, now, exc_info=exc)
            raise DataError(f"could not load model {name!r} from its start-up source: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}; {now}") from None
        await self._swap(name, fresh)
        return fresh

    async def unload_name(self, name: str) -> None:
        """Stop serving ``name`` (its queued requests finish first); ``load_name`` brings it back."""
        self._start_up_source(name)
        async with self._lock:
            current = self._models.pop(name, None)
        if current is not None:
            LOGGER.info("model %s: version %s unloaded", name, current.version)
            await current.close()

    def _start_up_source(self, name: str) -> str:
        if name not in self._sources:
            raise ModelNotFoundError(f"no model named {name[:100]!r} was given at start-up; this server can load "
                                     f"only {', '.join(sorted(self._sources))}")
        return self._sources[name]

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
