"""Suite-wide guards shared by every test module."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_from_an_earlier_module():
    """Each module starts its own Ray: one left running by a module whose setup failed is shut down
    first, so a single failure cannot turn every later module into 'ray.init twice' errors."""
    if ray.is_initialized():
        ray.shutdown()
    yield
