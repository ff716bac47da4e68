"""The mapping between a modelkeep version and OCI (normative; docs/registry.md, "OCI registries"): pure, no I/O.

- model ``NAME`` -> repository ``NAMESPACE/NAME``; OCI repository names are lowercase, so a name that is not
  a valid repository component (``ResNet``, ``a..b``) is refused (``repository_name``), never mapped;
- a version -> an image manifest (``image_manifest``): ``artifactType`` ``MODEL_TYPE``, config the layout
  manifest (``VERSION_TYPE``; its digest is the version id), layers the distinct blobs (``HEADER_TYPE``,
  ``TENSOR_TYPE`` annotated with the tensor's name, ``CARD_TYPE``), annotations ``CREATED`` and ``RECORD``;
- tags: ``mk-<version id>`` (``version_tag``) on every version, aliases are any other tag (none may start
  with ``mk-``), ``mk-<version id>.sig`` the signature attachment (``attachment_tag``, ``attachment_manifest``);
- ``REMOVED``: the manifest a removed alias is re-pointed to before it is deleted;
- URLs: ``oci://HOST[:PORT]/[NAMESPACE/]NAME[:TAG | @sha256:DIGEST]`` (``parse_oci_url``).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ..artifact.format import loads_bounded
from ..errors import ConfigError
from ..io.blobstore import DIGEST
from . import layout
from .base import SIGNATURE, Version, check_name

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
USERNAME_VAR, PASSWORD_VAR, INSECURE_VAR = "MODELKEEP_OCI_USERNAME", "MODELKEEP_OCI_PASSWORD", "MODELKEEP_OCI_INSECURE"
MODEL_TYPE = "application/vnd.modelkeep.model.v1"
VERSION_TYPE = "application/vnd.modelkeep.version.v1+json"
HEADER_TYPE = "application/vnd.modelkeep.header.v1"
TENSOR_TYPE = "application/vnd.modelkeep.tensor.v1"
CARD_TYPE = "text/markdown"
REMOVED_TYPE = "application/vnd.modelkeep.removed.v1"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
CREATED, RECORD, TENSOR = "org.opencontainers.image.created", "dev.modelkeep.record", "dev.modelkeep.tensor"
VERSION_TAG = re.compile(r"^mk-([0-9a-f]{64})$")
#: One path component of an OCI repository name.
COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
MAX_ATTACHMENT_BYTES = 1 << 20
#: The OCI empty descriptor's bytes: the config of attachments and of ``REMOVED``.
EMPTY = b"{}"
EMPTY_DESCRIPTOR = {"mediaType": EMPTY_TYPE, "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(), "size": 2}
DIGEST_REF = re.compile(r"^([^@]+)@sha256:([0-9a-f]{64})$")


def canonical(doc: dict[str, Any]) -> bytes:
    """The exact bytes a manifest is PUT as (so its digest is known before the PUT)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


#: What a removed alias is re-pointed to before this manifest is deleted (see ``OciRegistry.remove``).
REMOVED = canonical({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": REMOVED_TYPE,
                     "config": EMPTY_DESCRIPTOR, "layers": [EMPTY_DESCRIPTOR]})
REMOVED_DIGEST = "sha256:" + hashlib.sha256(REMOVED).hexdigest()


def repository_name(name: str) -> str:
    """``name`` if it is a model name that is also an OCI repository component, else ``ConfigError``."""
    check_name(name)
    if not COMPONENT.match(name):
        hint = f"; use {name.lower()!r}" if COMPONENT.match(name.lower()) else ""
        raise ConfigError(f"model name {name!r} cannot name an OCI repository: use lowercase letters and digits, "
                          f"separated by single '.', '_', '__' or runs of '-'{hint}")
    return name


def parse_location(location: str) -> tuple[str, str]:
    """``oci://HOST[:PORT][/NAMESPACE]`` -> ``(host, namespace)``; the namespace may hold slashes or be empty."""
    if not isinstance(location, str) or not location.startswith("oci://"):
        raise ConfigError(f"an OCI registry location is oci://HOST[:PORT][/NAMESPACE], got {str(location)[:120]!r}")
    parts = urlsplit(location)
    host, namespace = parts.netloc, parts.path.strip("/")
    if "@" in host:
        raise ConfigError(f"credentials do not go in {location[:120]!r}: set {USERNAME_VAR} and {PASSWORD_VAR}")
    try:
        ok = bool(host) and parts.hostname is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        ok = False
    if not ok or parts.query or parts.fragment:
        raise ConfigError(f"{location[:120]!r} is not oci://HOST[:PORT][/NAMESPACE]")
    for component in filter(None, namespace.split("/")):
        if not COMPONENT.match(component):
            raise ConfigError(f"namespace {namespace!r} in {location[:120]!r}: each part must be lowercase letters "
                              "and digits separated by '.', '_', '__' or '-'")
    return host, namespace


def parse_oci_url(url: str) -> tuple[str, str]:
    """``oci://HOST/[NAMESPACE/]NAME[:TAG | @sha256:DIGEST]`` -> ``(registry location, modelkeep ref)``.

    A tag ``mk-<id>`` gives ``NAME:<id>``, another tag ``NAME@TAG`` (an alias), a manifest digest
    ``NAME@sha256:<digest>`` (which ``OciRegistry.resolve`` reads), no tag ``NAME`` (the newest version,
    not a tag named ``latest``)."""
    if not isinstance(url, str) or not url.startswith("oci://"):
        raise ConfigError(f"an OCI model URL is oci://HOST/[NAMESPACE/]NAME[:TAG], got {str(url)[:120]!r}")
    host, _, path = url[len("oci://"):].partition("/")
    path, _, digest = path.partition("@")
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    namespace, _, name = path.rpartition("/")
    if not name:
        raise ConfigError(f"{url[:120]!r} names no model: use oci://HOST/[NAMESPACE/]NAME[:TAG]")
    location = f"oci://{host}" + (f"/{namespace}" if namespace else "")
    parse_location(location)
    repository_name(name)
    if digest:
        if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
            raise ConfigError(f"{digest[:80]!r} in {url[:120]!r} is not a sha256:<64 hex> manifest digest")
        return location, f"{name}@{digest}"
    if tag is None:
        return location, name
    version = VERSION_TAG.match(tag)
    if version:
        return location, f"{name}:{version.group(1)}"
    return location, f"{name}@{check_alias(tag)}"


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias.startswith("mk-"):
        raise ConfigError(f"alias {alias!r} is not allowed: tags starting with 'mk-' are modelkeep's own "
                          "(mk-<version id> on every version); choose another name")
    return alias


def version_tag(version_id: str) -> str:
    return f"mk-{version_id}"


def attachment_tag(version_id: str, kind: str) -> str:
    suffix = "sig" if kind == SIGNATURE else check_name(kind, "attachment kind")
    if len(suffix) > 60:
        raise ConfigError(f"attachment kind {kind[:70]!r} is longer than 60 characters")
    return f"mk-{version_id}.{suffix}"


def image_manifest(manifest: dict[str, Any], record: dict[str, Any], *, parent: str | None,
                   card_size: int | None) -> bytes:
    """The OCI image manifest of a version (``manifest`` is the layout manifest, its config)."""
    config = layout.encode(manifest)
    layers, seen = [], set()
    blobs = [(manifest["header"], HEADER_TYPE), *((segment, TENSOR_TYPE) for segment in manifest["segments"])]
    if manifest.get("card"):
        blobs.append(({"digest": manifest["card"], "size": card_size or 0}, CARD_TYPE))
    for blob, media_type in blobs:
        if blob["digest"] in seen:
            continue
        seen.add(blob["digest"])
        layer: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{blob['digest']}", "size": blob["size"]}
        if blob.get("tensor"):
            layer["annotations"] = {TENSOR: blob["tensor"]}
        layers.append(layer)
    created = time.time()
    stamp = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kept = {key: record.get(key) for key in ("metrics", "hyperparameters", "lineage", "content_hash")}
    kept.update(created=created, size=manifest["size"], parent=parent)
    return canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": MODEL_TYPE,
        "config": {"mediaType": VERSION_TYPE, "digest": f"sha256:{layout.version_id(manifest)}",
                   "size": len(config)},
        "layers": layers, "annotations": {CREATED: stamp, RECORD: json.dumps(kept, sort_keys=True)}})


def version_id_of(doc: dict[str, Any]) -> str | None:
    """The version id an image manifest holds (its config digest), ``None`` for what is not a version."""
    config = doc.get("config")
    if not isinstance(config, dict) or config.get("mediaType") != VERSION_TYPE:
        return None
    digest = str(config.get("digest", ""))
    return digest[7:] if digest.startswith("sha256:") and DIGEST.match(digest[7:]) else None


def version_of(name: str, doc: dict[str, Any], aliases: tuple[str, ...]) -> Version | None:
    version_id = version_id_of(doc)
    if version_id is None:
        return None
    raw = (doc.get("annotations") or {}).get(RECORD, "{}")
    record = loads_bounded(raw, f"the record of {name}:{version_id[:12]}") if isinstance(raw, str) else {}
    record = record if isinstance(record, dict) else {}

    def typed(key: str, kind: type, default: Any) -> Any:
        return record.get(key) if isinstance(record.get(key), kind) else default

    return Version(name=name, id=version_id, created=float(typed("created", (int, float), 0.0)),
                   size=typed("size", int, 0), metrics=typed("metrics", dict, {}),
                   hyperparameters=typed("hyperparameters", dict, {}), lineage=typed("lineage", dict, None),
                   parent=typed("parent", str, None), aliases=aliases, content_hash=typed("content_hash", str, None))


def attachment_manifest(kind: str, blob: str, size: int, subject: tuple[str, int]) -> bytes:
    """A small artifact holding one blob (``kind``, e.g. a signature), its ``subject`` the version's manifest
    (``(digest, size)``), so registries with the referrers API also list it beside the version."""
    media_type = f"application/vnd.modelkeep.{kind}.v1"
    return canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": media_type, "config": EMPTY_DESCRIPTOR,
        "layers": [{"mediaType": media_type, "digest": f"sha256:{blob}", "size": size}],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": subject[0], "size": subject[1]}})
