"""Opening an fsspec filesystem for an object-store registry: the URL's protocol, the package it needs, and
fsspec's configuration as the environment says now (fsspec reads ``FSSPEC_*`` only when first imported)."""
from __future__ import annotations

import os
import warnings
from typing import Any

from ..errors import ConfigError


def environment_options(filesystem_class: Any) -> dict[str, Any]:
    """fsspec's configuration for ``filesystem_class`` from the environment as it is now (``FSSPEC_<PROTOCOL>``
    JSON, then ``FSSPEC_<PROTOCOL>_<KWARG>``); fsspec itself reads it only when first imported."""
    from fsspec import config

    fresh: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fsspec warned about odd FSSPEC_ names when it was imported
        config.set_conf_env(fresh, os.environ)
    options: dict[str, Any] = {}
    protocols = filesystem_class.protocol
    for protocol in protocols if isinstance(protocols, (tuple, list)) else [protocols]:
        options.update(fresh.get(protocol, {}))
    return options


def open_filesystem(location: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, root path)`` for a URL; ``ConfigError`` naming the package to install when one is missing."""
    from fsspec.core import split_protocol

    protocol, path = split_protocol(str(location))
    if not protocol or not path or not path.strip("/"):
        raise ConfigError(f"an object-store registry needs a URL with a bucket or path, like s3://bucket/models; "
                          f"got {str(location)[:120]!r}")
    try:
        import fsspec

        filesystem_class = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        hint = "pip install modelkeep[s3]" if protocol in ("s3", "s3a") else f"install it ({str(exc)[:120]})"
        raise ConfigError(f"the registry at {location} needs the fsspec filesystem for {protocol}://: {hint}") \
            from None
    except ValueError:
        raise ConfigError(f"fsspec knows no protocol {protocol!r} (in {str(location)[:120]!r}); use s3://, gs://, "
                          "memory:// or another fsspec URL") from None
    options = dict(storage_options) if storage_options is not None else environment_options(filesystem_class)
    options.setdefault("skip_instance_cache", True)
    options.setdefault("use_listings_cache", False)
    filesystem = filesystem_class(**options)
    return filesystem, filesystem_class._strip_protocol(str(location)).rstrip("/")
