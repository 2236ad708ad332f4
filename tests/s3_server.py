"""A real S3 endpoint for tests: ``moto_server`` (PyPI ``moto[server]``) on 127.0.0.1.

Not a test module. Use the context manager or the fixture factory:

    from s3_server import s3_fixture
    s3 = s3_fixture()                 # module-scoped pytest fixture

    def test_x(s3):
        reg = Registry(s3.uri("registry"))   # s3://bucket/registry?endpoint_override=...&scheme=http&region=...
        fs = s3.filesystem()                 # a pyarrow S3FileSystem on the same endpoint

The server listens on a free port on 127.0.0.1, keeps everything in memory and is stopped
(SIGTERM, then SIGKILL) at the end. Dummy credentials are put in the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) for as long as the server runs, since
pyarrow's and boto's S3 clients read them from there; the previous values are restored.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs
import pytest

from processes import free_port, stop

HOST = "127.0.0.1"
REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata endpoint for credentials
}


def moto_server_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    return [*base, "-H", HOST, "-p", str(port)]


@dataclass
class S3Server:
    """A running moto S3 server with one bucket."""

    endpoint: str  # host:port
    bucket: str
    process: subprocess.Popen
    log_path: Path

    @property
    def options(self) -> str:
        return f"endpoint_override={self.endpoint}&scheme=http&region={REGION}"

    def uri(self, prefix: str = "", bucket: str | None = None) -> str:
        """``s3://bucket/prefix?endpoint_override=…&scheme=http&region=…`` for pyarrow's ``from_uri``."""
        path = f"{bucket or self.bucket}/{prefix.strip('/')}".rstrip("/")
        return f"s3://{path}?{self.options}"

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", region=REGION,
                                 access_key=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                                 secret_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=f"http://{self.endpoint}", region_name=REGION,
                     aws_access_key_id=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/", timeout=1.0) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:  # any HTTP answer means the server is up
        return err.code < 500
    except OSError:
        return False


@contextlib.contextmanager
def s3_server(bucket: str = "streamfit-test", start_timeout_s: float = 30.0) -> Iterator[S3Server]:
    """Start moto_server on 127.0.0.1, wait until it answers, create ``bucket``, yield it, stop it."""
    saved = {k: os.environ.get(k) for k in (*DUMMY_ENV, "NO_PROXY", "no_proxy")}
    os.environ.update(DUMMY_ENV)
    # the readiness probe (urllib), boto3 and the server reach 127.0.0.1 directly, never through a proxy
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = HOST
    proc: subprocess.Popen | None = None
    try:
        port = free_port()
        log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "moto_server.log"
        cmd = moto_server_command(port)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = S3Server(endpoint=f"{HOST}:{port}", bucket=bucket, process=proc, log_path=log_path)
        deadline = time.monotonic() + start_timeout_s
        while not _answers(server.endpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {' '.join(cmd)}\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto_server on {server.endpoint} not ready after {start_timeout_s}s\n"
                                   f"{server.log_tail()}")
            time.sleep(0.1)
        server.create_bucket(bucket)
        yield server
    finally:
        if proc is not None:
            stop(proc, grace_s=5.0)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_fixture(scope: str = "module", bucket: str = "streamfit-test"):
    """A pytest fixture (assign it to a name in a test module) yielding a running ``S3Server``."""

    @pytest.fixture(scope=scope)
    def _s3() -> Iterator[S3Server]:
        with s3_server(bucket) as server:
            yield server

    return _s3
