"""``modelkeep serve``: saved models over HTTP, speaking the Open Inference Protocol (KServe V2) and V1 predict.

The modules, each with one job: ``settings`` (the options), ``protocol`` (the request/response shapes),
``models`` (a loaded model and what runs its batches), ``table`` (the served models; following registry
aliases), ``batching`` (the dynamic batcher), ``inputs`` and ``uploads`` (checks before any work),
``auth`` (API keys), ``middleware`` (body limit, access log), ``metrics`` (Prometheus), ``v2``/``v1`` (the
endpoints), ``repository`` (the management endpoints, behind their own keys), ``page``/``page_parts`` (a page per model: card, layers, curves, lineage, a try-it form; assets in
``static/``), ``onnx_runner`` (the onnxruntime backend) and ``app`` (the factory). This layer sits above ``registry`` and below ``cli``; it runs models
through ``artifact`` (``load`` with ``mmap=False``, ``Model.predict``) and never imports ``train`` or
``checkpoint``. FastAPI, uvicorn and prometheus-client come with the ``serve`` extra.
"""
from __future__ import annotations

from .settings import ServeSettings


def create_app(settings: ServeSettings, **options):  # noqa: ANN201 - FastAPI is imported only when called
    """The FastAPI app serving ``settings.sources`` (see ``modelkeep.serve.app.create_app``)."""
    from .app import create_app as build

    return build(settings, **options)


__all__ = ["ServeSettings", "create_app"]
