"""Shards spread over nodes: on a two-node ``ray.cluster_utils.Cluster`` (1 CPU each) the pipeline's
``start_data_plane`` places its two shard actors (0.5 CPU, ``SPREAD``) on different nodes, and a
short stream runs through both."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import ray
from ray.cluster_utils import Cluster

from streamfit.config import config_from_dict
from streamfit.scripts.pipeline import NAMESPACE, start_data_plane


@pytest.fixture(scope="module")
def two_nodes():
    # A private Ray temp dir: the cluster's address file must not be found by ray.init() of other runs.
    ray_tmp = tempfile.mkdtemp(prefix="sfspread-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_shards_spread_over_two_nodes_and_both_ingest(two_nodes):
    cfg = config_from_dict({"stream": {"entities": 200, "batch_size": 500, "max_events": 5_000, "bad_row_rate": 0.0,
                                       "max_events_per_s": None},
                            "shards": {"num_shards": 2, "num_cpus": 0.5}, "checkpoints": {"enabled": False}})
    shards, coord = start_data_plane(cfg, None)
    ray.get([s.stats.remote() for s in shards], timeout=120)
    nodes = [a["Address"]["NodeID"] for a in ray._private.state.actors().values()
             if a["State"] == "ALIVE" and a["Name"].startswith("streamfit-shard-")]
    assert len(nodes) == 2
    assert len(set(nodes)) == 2 == len({n["NodeID"] for n in ray.nodes() if n["Alive"]})
    ray.get(coord.run.remote(None), timeout=300)
    stats = ray.get([s.stats.remote() for s in shards], timeout=60)
    assert all(s["events"] > 0 for s in stats) and sum(s["events"] for s in stats) == 5_000
