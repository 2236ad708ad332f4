"""Suite-wide guards shared by every test module."""

from __future__ import annotations

import os
import tempfile

import pytest
import ray

# Pipelines started by tests generate an admin token file when none is set: keep it out of the user's home.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="streamfit-test-config-")
# Ray starts its workers at niceness 15: beside any busy process at 0 (`stress --cpu 2` in the loaded runs,
# another CI job) they got ~2 % of the CPU and the suite crawled (35 % in 48 min). The tests' actors compete
# as equals, as a streamfit deployment's do on a node of its own.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_from_an_earlier_module():
    """Each module starts its own Ray: one left running by a module whose setup failed is shut down
    first, so a single failure cannot turn every later module into 'ray.init twice' errors."""
    if ray.is_initialized():
        ray.shutdown()
    yield
