"""Real servers on loopback for the registry backends' tests: an OCI `distribution` registry and Ceph radosgw (S3).

Session-scoped pytest fixtures; each skips with a reason when its binaries are missing (Debian packages
`docker-registry` + `apache2-utils`; `ceph-mon ceph-osd radosgw ceph-common`). Import the fixtures into a test
module (`from servers import oci_registry  # noqa: F401`). Configs and pitfalls: docs/registry.md (test servers).
"""
from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _require(*binaries: str) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        pytest.skip(f"real-server test needs {', '.join(missing)} on PATH (see tests/registry/servers.py)")


def _wait_http(url: str, procs: list[subprocess.Popen], timeout: float, log: Path) -> None:
    """Wait until `url` answers (any HTTP status); fail naming the log if a process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            pytest.fail(f"{dead[0].args[0]} exited with {dead[0].returncode}; log: {log}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s; log: {log}")


def _stop(procs: list[subprocess.Popen], signal_kill: bool = False) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.kill() if signal_kill else proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- OCI distribution registry


@dataclasses.dataclass(frozen=True)
class OciRegistry:
    host: str  # "127.0.0.1:PORT", the oras target prefix: f"{host}/repo:tag"
    root: Path  # the registry's filesystem storage
    username: str | None = None
    password: str | None = None

    def client(self):
        """An oras client for this registry (plain HTTP; basic auth when the registry has a password)."""
        import oras.client

        if self.username is None:
            return oras.client.OrasClient(insecure=True)
        # auth_backend="basic": the default "token" backend treats the Basic realm as a token URL and fails.
        client = oras.client.OrasClient(insecure=True, auth_backend="basic")
        client.auth.set_basic_auth(self.username, self.password)
        return client


def _start_oci(base: Path, username: str | None = None, password: str | None = None) -> Iterator[OciRegistry]:
    _require("docker-registry", *(["htpasswd"] if username else []))
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if username:
        htpasswd = base / "htpasswd"
        # distribution accepts only bcrypt entries (-B)
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), username, password], check=True, capture_output=True)
        auth = f"auth:\n  htpasswd:\n    realm: modelkeep-test\n    path: {htpasswd}\n"
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {LOOPBACK}:{port}\n  secret: modelkeep-test-secret\n{auth}"
    )
    log = base / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://{LOOPBACK}:{port}/v2/", [proc], 20, log)
        yield OciRegistry(f"{LOOPBACK}:{port}", base / "data", username, password)
    finally:
        _stop([proc])


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory) -> Iterator[OciRegistry]:
    """A real `distribution` registry on loopback, no authentication."""
    yield from _start_oci(tmp_path_factory.mktemp("oci"))


@pytest.fixture(scope="session")
def oci_registry_auth(tmp_path_factory) -> Iterator[OciRegistry]:
    """A real `distribution` registry on loopback with htpasswd (bcrypt) basic authentication."""
    yield from _start_oci(tmp_path_factory.mktemp("oci_auth"), "modelkeep", "modelkeep-secret")


# ---------------------------------------------------------------- Ceph radosgw (S3)


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    key: str
    secret: str

    def storage_options(self) -> dict:
        """Keyword arguments for fsspec/s3fs. No region: s3fs sends any region_name as a bucket
        LocationConstraint, which radosgw refuses unless it names its zonegroup."""
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint_url}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())


def _ceph_conf(base: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:{LOOPBACK}:{mon_port}
public addr = {LOOPBACK}
cluster addr = {LOOPBACK}
public network = 127.0.0.0/8
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# with auth none the default "secure" mon client mode has no key: clients fail with -13 (EACCES) and hang
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms service mode = crc
ms cluster mode = crc
ms mon cluster mode = crc
client mount timeout = 20
rados mon op timeout = 20
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
pid file = {base}/run/$name.pid
keyring = {base}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
# faster map commits: each pool radosgw creates at start costs a paxos round (default 1 s + osd map churn)
paxos propose interval = 0.05
paxos min wait = 0.01
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
osd crush chooseleaf type = 0
[mon]
mon data = {base}/mon
[osd]
osd data = {base}/osd$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd max object name len = 460
osd max object namespace len = 64
[client.rgw]
rgw frontends = beast endpoint={LOOPBACK}:{rgw_port} tcp_nodelay=1
rgw data = {base}/rgw
"""


def _run(*cmd: str, timeout: float = 60) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def _start_radosgw(base: Path) -> Iterator[S3Server]:
    _require("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool")
    for sub in ("mon", "osd0", "run", "log", "rgw"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    mon_port, rgw_port = free_port(), free_port()
    conf = base / "ceph.conf"
    conf.write_text(_ceph_conf(base, fsid, mon_port, rgw_port))
    c = ("-c", str(conf))
    _run("ceph-authtool", "--create-keyring", str(base / "keyring"), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
    _run("monmaptool", "--create", "--addv", "a", f"[v2:{LOOPBACK}:{mon_port}]", "--fsid", fsid, str(base / "monmap"))
    _run("ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(base / "monmap"), "--keyring", str(base / "keyring"))
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(["ceph-mon", *c, "-f", "-i", "a"], stderr=subprocess.DEVNULL))
        _run("ceph", *c, "osd", "new", osd_uuid)
        _run("ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        procs.append(subprocess.Popen(["ceph-osd", *c, "-f", "-i", "0"], stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["radosgw", *c, "-f", "-n", "client.rgw"], stderr=subprocess.DEVNULL))
        endpoint = f"http://{LOOPBACK}:{rgw_port}"
        _wait_http(endpoint + "/", procs, 90, base / "log")
        key, secret = "MODELKEEPTESTKEY", uuid.uuid4().hex
        _run("radosgw-admin", *c, "user", "create", "--uid=modelkeep", "--display-name=modelkeep",
             f"--access-key={key}", f"--secret-key={secret}")
        yield S3Server(endpoint, key, secret)
    finally:
        _stop(procs, signal_kill=True)  # a throwaway in-memory cluster: SIGTERM shutdown takes ~5 s for nothing


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3 server on loopback: single-node Ceph (mon, memstore OSD, pool size 1) and radosgw (beast),
    cephx off, one S3 user with generated keys. About 1-2 s to start (11 s without the paxos settings)."""
    # ceph's admin sockets are unix sockets (path <= 107 bytes): keep the base temp dir short
    base = Path(tmp_path_factory.mktemp("ceph"))
    yield from _start_radosgw(base)
