"""Chunking on a simulated two-node cluster (ray.cluster_utils.Cluster), in its own process so it
does not disturb the test session's Ray."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, write_tree

SCRIPT = """
import json, sys
sys.path.insert(0, %(repo)r)
import ray
from ray.cluster_utils import Cluster
from actors.client import DocTune
from backend.ingest_config import IngestConfig

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
client = DocTune(%(home)r, ray_address=cluster.address)
report = client.ingest(%(root)r, "two", IngestConfig(batch_bytes=1))
stats = client.stats("two")
print(json.dumps({"nodes": len(ray.nodes()), "used": len(report.nodes), "files": stats["files"],
                  "chunks": stats["chunks"]}))
client.store.shutdown()
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_chunking_spreads_over_two_nodes(tmp_path):
    root = write_tree(tmp_path / "r", {f"docs/p{i}.md": f"# Page {i}\\n\\n" + "Slotting rules apply. " * 400
                                       for i in range(24)})
    code = SCRIPT % {"repo": str(REPO), "home": str(tmp_path / "h"), "root": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 2 and result["used"] == 2
    assert result["files"] == 24 and result["chunks"] >= 24
