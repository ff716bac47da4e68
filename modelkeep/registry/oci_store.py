"""The wire to an OCI registry: one connection (auth, bounded reads, typed errors) and its repositories.

``OciConnection`` talks the OCI distribution API over the ``requests`` session
that ``oras`` sets up, and uses ``oras``'s auth machinery (Basic credentials,
the Bearer token exchange, credentials from ``~/.docker/config.json``). The
requests themselves are ours, not ``oras``'s ``do_request``: that one retries
for about two minutes on a refused connection, sets no timeout and reads
bodies whole. Here every body read is capped before it is kept, and every
failure becomes a modelkeep error saying what to do.

``OciRepository`` is one repository (one model name): its blobs, through the
``BlobStore`` protocol (``has`` is a HEAD, ``put`` uploads only what is
missing, ``get`` checks the SHA-256), and its manifests and tags. It never
lists or deletes blobs: the registry collects its own.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from typing import Any

from ..errors import ConfigError, FormatError, IntegrityError, ModelNotFoundError, StorageError
from ..io.blobstore import DEFAULT_MAX_GET_BYTES, Data, check_digest
from .base import BlobsCollected
from .oci_mapping import MANIFEST_TYPE

#: Tags lists and catalog pages larger than this are refused.
MAX_PAGE_BYTES = 16 << 20
#: Error bodies are read up to this many bytes (for the message only).
MAX_ERROR_BYTES = 64 << 10
#: Pauses before sending an idempotent request again after a 5xx or 429 answer.
RETRY_SECONDS = (0.1, 0.4, 1.6)
#: ``(connect, read)`` seconds.
TIMEOUT = (10.0, 300.0)
CREDENTIALS_HINT = ("set MODELKEEP_OCI_USERNAME and MODELKEEP_OCI_PASSWORD (or pass username=/password=, or "
                    "`docker login` the host) to an account allowed to read and push there")


def import_oras() -> Any:
    """The ``oras`` package, or ``ConfigError`` saying how to install it."""
    try:
        import oras.auth  # noqa: F401
        import oras.auth.utils  # noqa: F401
        import oras.container  # noqa: F401
        import requests  # noqa: F401
    except ImportError:
        raise ConfigError("the OCI registry backend needs the oras package: pip install modelkeep[oci]") from None
    return oras


class OciConnection:
    """One registry host: ``request`` sends with the right credentials; ``read`` takes a bounded body."""

    def __init__(self, host: str, *, secure: bool, username: str | None = None,
                 password: str | None = None) -> None:
        oras = import_oras()
        import requests

        self.host, self.secure = host, secure
        self.base = f"{'https' if secure else 'http'}://{host}"
        self._requests = requests
        self.session = requests.Session()
        # Bearer challenges go to oras's token backend (it trades Basic credentials for a token).
        self._tokens = oras.auth.get_auth_backend("token", self.session, not secure)
        self._basic = oras.auth.utils.get_basic_auth(username, password) if username is not None else None
        if username is not None:
            self._tokens.set_basic_auth(username, password)
        self._docker_config_read = username is not None
        self._authorization: dict[str, str] = {}  # "" for Basic (host-wide), else the repository of a token

    def request(self, method: str, url: str, *, repo: str, what: str, ok: tuple[int, ...] = (200,),
                headers: dict[str, str] | None = None, data: Any = None, params: dict[str, str] | None = None,
                idempotent: bool | None = None) -> Any:
        """Send (``url`` is a path below the host or a full URL) and answer one auth challenge; a status
        outside ``ok`` raises the matching modelkeep error (the response is closed then).

        An idempotent request (GET, HEAD, or one marked so) is sent again on a 5xx or 429: distribution's
        filesystem driver answers 500 to a read that meets a tag being rewritten."""
        url = url if url.startswith(("http://", "https://")) else self.base + url
        retries = RETRY_SECONDS if (method in ("GET", "HEAD") if idempotent is None else idempotent) else ()
        for pause in (*retries, None):
            response = self._send(method, url, repo, headers, data, params)
            if response.status_code == 401 and self._answer(response, repo):
                response.close()
                response = self._send(method, url, repo, headers, _rewound(data), params)
            if pause is None or response.status_code not in (429, 500, 502, 503, 504):
                break
            response.close()
            time.sleep(pause)
            data = _rewound(data)
        if response.status_code not in ok:
            with response:
                raise self.error(response, what)
        return response

    def _send(self, method: str, url: str, repo: str, headers: dict[str, str] | None, data: Any,
              params: dict[str, str] | None) -> Any:
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        authorization = self._authorization.get(repo) or self._authorization.get("")
        if authorization:
            sent["Authorization"] = authorization
        errors = self._requests.exceptions
        try:
            return self.session.request(method, url, headers=sent, data=data, params=params, stream=True,
                                        timeout=TIMEOUT)
        except errors.SSLError as exc:
            raise StorageError(f"TLS with the OCI registry at {self.host} failed ({str(exc)[:200]}); a registry "
                               "that serves plain HTTP needs insecure=True or MODELKEEP_OCI_INSECURE=1, one with a "
                               "private certificate authority REQUESTS_CA_BUNDLE=/path/to/ca.pem") from None
        except errors.ConnectionError as exc:
            raise StorageError(f"cannot reach the OCI registry at {self.host} ({_reason(exc)}); check that it runs "
                               "and that the host and port in the oci:// location are right") from None
        except errors.RequestException as exc:
            raise StorageError(f"the OCI registry at {self.host} did not answer {method} {url[:200]}: "
                               f"{str(exc)[:200]}") from None

    def _answer(self, response: Any, repo: str) -> bool:
        """Take up a 401's challenge (Basic or Bearer); False when there is nothing new to send."""
        challenge = response.headers.get("WWW-Authenticate", "")
        self._read_docker_config()
        if challenge.lower().startswith("basic"):
            if self._basic is None or self._authorization.get("") == f"Basic {self._basic}":
                return False
            self._authorization[""] = f"Basic {self._basic}"
            return True
        if challenge.lower().startswith("bearer"):
            import oras.auth.utils

            token = self._tokens.request_token(oras.auth.utils.parse_auth_header(challenge))
            if not token or self._authorization.get(repo) == f"Bearer {token}":
                return False
            self._authorization[repo] = f"Bearer {token}"
            return True
        return False

    def _read_docker_config(self) -> None:
        """Credentials for this host from ``~/.docker/config.json`` (or its credential helper), read once and
        only when the registry asks for them and none were given."""
        if self._docker_config_read:
            return
        self._docker_config_read = True
        import oras.container

        try:
            self._tokens.load_configs(oras.container.Container("modelkeep", registry=self.host))
        except (OSError, ValueError, KeyError):
            return
        self._basic = getattr(self._tokens, "_basic_auth", None) or None

    def read(self, response: Any, limit: int, what: str) -> bytes:
        """The body of ``response`` (closed after), refused with ``FormatError`` past ``limit`` bytes."""
        with response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise FormatError(f"{what} is {int(declared):,} bytes, larger than the limit of {limit:,}; refused")
            body = bytearray()
            try:
                for chunk in response.iter_content(1 << 20):
                    body += chunk
                    if len(body) > limit:
                        raise FormatError(f"{what} is larger than {limit:,} bytes; refused")
            except self._requests.exceptions.RequestException as exc:
                raise StorageError(f"reading {what} from {self.host} failed: {str(exc)[:200]}") from None
        return bytes(body)

    def error(self, response: Any, what: str) -> Exception:
        """The modelkeep error for a failed answer: auth → ``ConfigError``, 404 → ``ModelNotFoundError``, the
        registry refusing a manifest for a missing blob → ``BlobsCollected``, else ``StorageError``."""
        code, message = self.error_code(response)
        status = response.status_code
        said = f"{status} {code}: {message}" if code else f"{status} {response.reason}"
        if status in (401, 403):
            given = "the credentials given were refused" if self._basic else "it needs credentials"
            return ConfigError(f"the OCI registry at {self.host} refused {what} ({said}): {given}; {CREDENTIALS_HINT}")
        if status == 404:
            return ModelNotFoundError(f"{what} not found in the OCI registry at {self.host} ({said})")
        if code == "MANIFEST_BLOB_UNKNOWN":
            return BlobsCollected(f"the OCI registry at {self.host} no longer holds a blob of {what} ({said}); "
                                  "push again")
        if status == 405 or code == "UNSUPPORTED":
            return ConfigError(f"the OCI registry at {self.host} does not allow {what} ({said}); on `distribution` "
                               "set storage.delete.enabled: true, elsewhere ask its administrator")
        return StorageError(f"the OCI registry at {self.host} answered {what} with {said}")

    def error_code(self, response: Any) -> tuple[str, str]:
        """``(code, message)`` of an OCI error body (``("", "")`` when it has none)."""
        try:
            doc = json.loads(response.raw.read(MAX_ERROR_BYTES, decode_content=True) or b"{}")
            first = (doc.get("errors") or [{}])[0]
            return str(first.get("code", ""))[:60], str(first.get("message", ""))[:200]
        except (ValueError, AttributeError, TypeError, IndexError, self._requests.exceptions.RequestException):
            return "", ""

    def catalog(self) -> list[str]:
        """Every repository the registry lists (``/v2/_catalog``, page by page)."""
        return self.pages("/v2/_catalog?n=1000", "repositories", repo="", what="the repository catalog")

    def pages(self, url: str, key: str, *, repo: str, what: str) -> list[str]:
        found: list[str] = []
        while url:
            response = self.request("GET", url, repo=repo, what=what)
            link = response.links.get("next", {}).get("url")
            try:
                doc = json.loads(self.read(response, MAX_PAGE_BYTES, what))
                found += [str(item) for item in (doc.get(key) or [])]
            except (ValueError, AttributeError, TypeError):
                raise FormatError(f"{what} from {self.host} is not the JSON the OCI API specifies") from None
            url = link if link is None or link.startswith("http") else self.base + link
        return found


class OciRepository:
    """One repository: its blobs (the ``BlobStore`` protocol) and its manifests and tags."""

    def __init__(self, connection: OciConnection, path: str) -> None:
        self.connection, self.path = connection, path
        self._sizes: dict[str, int] = {}

    @property
    def location(self) -> str:
        return f"{self.connection.host}/{self.path}"

    def _call(self, method: str, suffix: str, what: str, **options: Any) -> Any:
        return self.connection.request(method, f"/v2/{self.path}/{suffix}", repo=self.path, what=what, **options)

    # ------------------------------------------------------------------ blobs

    def has(self, digest: str) -> bool:
        response = self._call("HEAD", f"blobs/sha256:{check_digest(digest)}", f"blob {digest}", ok=(200, 404))
        with response:
            if response.status_code == 404:
                return False
            self._sizes[digest] = int(response.headers.get("Content-Length") or 0)
        return True

    def size(self, digest: str) -> int:
        if digest not in self._sizes and not self.has(digest):
            raise ModelNotFoundError(f"no blob {digest} in {self.location}; push the version again")
        return self._sizes[digest]

    def put(self, data: Data, *, digest: str | None = None) -> str:
        """Upload ``data`` unless the repository holds its digest already; ``IntegrityError`` when ``digest`` is
        given and the bytes hash to something else (nothing is uploaded then)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            actual = hashlib.sha256(data).hexdigest()
            _expect(digest, actual)
            if not self.has(actual):
                self._upload(bytes(data), actual, len(data))
            return actual
        with tempfile.TemporaryFile() as spool:
            hasher, size = hashlib.sha256(), 0
            while chunk := data.read(1 << 20):
                hasher.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            actual = hasher.hexdigest()
            _expect(digest, actual)
            if not self.has(actual):
                spool.seek(0)
                self._upload(spool, actual, size)
        return actual

    def _upload(self, body: Any, digest: str, size: int) -> None:
        """POST for an upload session, then PUT the bytes to it (monolithic upload)."""
        started = self._call("POST", "blobs/uploads/", f"an upload of blob {digest}", ok=(202,))
        with started:
            location = started.headers.get("Location")
        if not location:
            raise StorageError(f"{self.connection.host} started an upload without a Location header")
        done = self.connection.request(
            "PUT", location, repo=self.path, what=f"the upload of blob {digest}", ok=(201,),
            params={"digest": f"sha256:{digest}"}, data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        with done:
            stored = done.headers.get("Docker-Content-Digest")
        if stored and stored != f"sha256:{digest}":
            raise IntegrityError(f"{self.location} stored blob {digest} as {stored}")
        self._sizes[digest] = size

    def get(self, digest: str, *, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes:
        """The blob's bytes (at most ``max_bytes``), checked against ``digest``."""
        response = self._call("GET", f"blobs/sha256:{check_digest(digest)}", f"blob {digest} of {self.path}")
        data = self.connection.read(response, max_bytes, f"blob {digest} in {self.location}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"blob {digest} in {self.location} is damaged: its bytes hash to {actual}. The "
                                 "registry's copy is corrupt; remove the versions that use it and push them again")
        return data

    def list(self) -> list[str]:
        raise ConfigError(f"an OCI registry does not list the blobs of {self.location}; it collects unreferenced "
                          "blobs itself (`registry garbage-collect` on distribution)")

    def delete(self, digest: str) -> None:
        raise ConfigError(f"blobs of {self.location} are not deleted one by one: remove the versions, then run the "
                          "registry's own garbage collector (`registry garbage-collect` on distribution)")

    # ------------------------------------------------------------------ manifests and tags

    def manifest(self, ref: str, *, limit: int) -> tuple[str, bytes] | None:
        """``(digest, bytes)`` of the manifest a tag or ``sha256:`` digest names, ``None`` when there is none."""
        response = self._call("GET", f"manifests/{ref}", f"manifest {self.path}:{ref}", ok=(200, 404),
                              headers={"Accept": MANIFEST_TYPE})
        if response.status_code == 404:
            response.close()
            return None
        body = self.connection.read(response, limit, f"manifest {self.path}:{ref}")
        return "sha256:" + hashlib.sha256(body).hexdigest(), body

    def manifest_digest(self, ref: str) -> str | None:
        """The digest of the manifest a tag names (a HEAD), ``None`` when the tag does not exist."""
        response = self._call("HEAD", f"manifests/{ref}", f"manifest {self.path}:{ref}", ok=(200, 404),
                              headers={"Accept": MANIFEST_TYPE})
        with response:
            return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None

    def put_manifest(self, ref: str, body: bytes) -> None:
        """PUT ``body`` (exact bytes, so its digest is known) under a tag: the registry's atomic commit."""
        self._call("PUT", f"manifests/{ref}", f"the manifest of {self.path}:{ref}", ok=(201,), data=body,
                   headers={"Content-Type": MANIFEST_TYPE}, idempotent=True).close()

    def delete_manifest(self, digest: str) -> bool:
        """Delete a manifest (and every tag naming it); False when it was not there."""
        response = self._call("DELETE", f"manifests/{digest}", f"deleting manifest {digest} of {self.path}",
                              ok=(202, 404), idempotent=True)
        response.close()
        return response.status_code == 202

    def tags(self) -> list[str]:
        """Every tag of the repository (``[]`` when it does not exist)."""
        try:
            return self.connection.pages(f"/v2/{self.path}/tags/list?n=1000", "tags", repo=self.path,
                                         what=f"the tags of {self.path}")
        except ModelNotFoundError:
            return []


def _rewound(data: Any) -> Any:
    if hasattr(data, "seek"):
        data.seek(0)
    return data


def _expect(digest: str | None, actual: str) -> None:
    if digest is not None and check_digest(digest) != actual:
        raise IntegrityError(f"the bytes given hash to {actual}, not to the digest {digest} they were put under; "
                             "nothing was uploaded")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if known in text:
            return known.lower()
    return text[:160]
