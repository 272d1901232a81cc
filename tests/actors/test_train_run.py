"""Training through the run actor on a real local Ray and store: the tiny model, on the CPU."""

import json
import subprocess
import sys
import time

import pytest

from backend.config_base import ConfigError
from backend.train_config import load_preset
from conftest import REPO


def make_dataset(client, project="t", n=48):
    client.store.upsert_project(project, "/nowhere", None)
    rows = []
    for i in range(n):
        rows.append({"sample_id": f"s{i:03d}", "split": "val" if i % 8 == 0 else "train", "path": f"docs/p{i % 6}.md",
                     "task": "qa", "language": "en", "instruction": f"What does berth rule {i % 6} say?",
                     "input": "", "output": f"Berth rule {i % 6} closes the slot window at {10 + i % 6}:00 sharp.",
                     "messages": None, "run_id": "r", "chunk_id": "c", "start_line": 1, "end_line": 2,
                     "generator": "test", "template_version": "qa@test"})
    return client.store.create_dataset(project, rows, source_runs=["r"], config={}, stats={})


def wait_for_step(client, run: str, step: int, timeout_s: float = 120) -> None:
    """Until the run has logged `step` (metrics reach the store about once a second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        steps = client.metrics(run, ["loss"]).column("step").to_pylist()
        if steps and max(steps) >= step:
            return
        time.sleep(0.5)
    raise TimeoutError(f"run {run} did not reach step {step} in {timeout_s}s")


def tiny(max_steps=None, **training):
    cfg = load_preset("tiny")
    if max_steps is not None:
        cfg.training.max_steps = max_steps
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg


@pytest.mark.slow
def test_training_run_records_metrics_events_and_artifacts(client):
    version = make_dataset(client)
    result = client.train("t", tiny(max_steps=12, eval_steps=6, save_steps=6))
    assert result["status"] == "completed" and result["global_step"] == 12, result.get("error")
    run = result["run_id"]
    metrics = client.metrics(run).to_pylist()
    names = {m["name"] for m in metrics}
    assert {"loss", "learning_rate", "grad_norm", "epoch", "tokens_per_second", "eval_loss", "cpu_percent",
            "rss_mb", "ram_percent"} <= names
    losses = [m["value"] for m in metrics if m["name"] == "loss"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    kinds = [e["kind"] for e in client.store.run_events(run)]
    assert kinds[0] == "started" and "completed" in kinds
    out = client.home / "runs" / run
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert list((out / "tensorboard").rglob("events.out.tfevents*"))
    row = client.store.run(run)
    assert row["config"]["dataset"] == version and row["config"]["seed"] == 3407
    assert row["config"]["train"]["lora"]["r"] == 8 and row["summary"]["global_step"] == 12
    listed = {r["run_id"]: r for r in client.runs()}
    assert listed[run]["status"] == "completed"
    merged = client.merge(run, dtype="fp32")["merged"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged, local_files_only=True)
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_cancel_then_resume_continues_from_the_checkpoint(client):
    make_dataset(client)
    started = client.train("t", tiny(max_steps=80, save_steps=4, eval_steps=1000), wait=False)
    run = started["run_id"]
    wait_for_step(client, run, 6)
    live = client.train_progress(run)  # what the Training page shows while the run goes
    assert live["status"] == "running" and live["max_steps"] == 80 and 6 <= live["step"] < 80
    assert live["tokens_per_second"] > 0 and live["seconds"] > 0 and live["seconds_left"] is not None
    assert client.cancel(run) == "cancelling"
    deadline = time.monotonic() + 120
    while client.store.run(run)["status"] not in {"cancelled", "completed", "failed"} and time.monotonic() < deadline:
        time.sleep(0.5)
    row = client.store.run(run)
    assert row["status"] == "cancelled" and row["summary"]["checkpoint"]
    stopped_at = row["summary"]["global_step"]
    assert 6 <= stopped_at < 80
    first_seconds = row["summary"]["seconds"]

    resumed = client.train(None, resume_run=run)
    assert resumed["status"] == "completed" and resumed["global_step"] == 80, resumed.get("error")
    # the resumed run went on from the checkpoint: every step logged exactly once, none repeated
    assert sorted(client.metrics(run, ["loss"]).column("step").to_pylist()) == list(range(1, 81))
    kinds = [e["kind"] for e in client.store.run_events(run)]
    assert "cancelled" in kinds and "resumed" in kinds and "resume" in kinds
    # tokens seen go on from the checkpoint's count: a curve against them never folds back at the resume
    tokens = [(m["step"], m["value"]) for m in client.metrics(run, ["num_tokens"]).to_pylist()]
    assert [s for s, _ in tokens] == list(range(1, 81))
    assert all(b > a for (_, a), (_, b) in zip(tokens, tokens[1:])), tokens
    # and "Seconds" counts both attempts
    done = client.train_progress(run)
    assert done["status"] == "completed" and done["step"] == done["max_steps"] == 80
    assert done["seconds"] == client.store.run(run)["summary"]["seconds"] > first_seconds


def test_bad_requests_fail_before_a_run_exists(client):
    with pytest.raises(KeyError):
        client.train("nope", tiny())
    client.store.upsert_project("empty", "/x", None)
    with pytest.raises(ValueError, match="no dataset version"):
        client.train("empty", tiny())
    make_dataset(client)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        client.train("t", load_preset("seed"))
    with pytest.raises(ValueError, match="no dataset version 'v9'"):
        client.train("t", tiny(), version="v9")
    cfg = tiny()
    cfg.model.max_seq_length = 100_000
    with pytest.raises(ConfigError, match="100000"):
        client.train("t", cfg)
    assert [r for r in client.runs() if r["kind"] == "train"] == []
    assert not any((client.home / "runs").iterdir())  # the home's private runs/ folder exists, and stays empty


SCRIPT = """
import json, sys
sys.path.insert(0, %(repo)r)
import ray
from ray.cluster_utils import Cluster
from actors.client import DocTune
from backend.train_config import load_preset
sys.path[:0] = [%(tests)r, %(tests_root)r]
from test_train_run import make_dataset

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1"})
gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
client = DocTune(%(home)r, ray_address=cluster.address)
make_dataset(client)
import time
cfg = load_preset("tiny")
cfg.training.max_steps = 30
first = client.train("t", cfg, wait=False)["run_id"]
second = client.train("t", cfg, wait=False)["run_id"]
seen = set()
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    status = {r["run_id"]: r["status"] for r in client.store.runs("t")}
    seen.add((status[first], status[second]))
    if status[first] == status[second] == "completed":
        break
    time.sleep(0.3)
nodes = [client.store.run_events(r)[0]["detail"]["node"] for r in (first, second)]
print(json.dumps({"seen": sorted(seen), "nodes": nodes, "gpu_node": gpu_node.node_id}))
client.store.shutdown()
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_trainers_are_placed_on_the_gpu_node_and_queue_for_it(tmp_path):
    code = SCRIPT % {"repo": str(REPO), "tests": str(REPO / "tests" / "actors"), "tests_root": str(REPO / "tests"),
                     "home": str(tmp_path / "h")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nodes"] == [result["gpu_node"]] * 2  # both ran on the GPU node
    seen = {tuple(pair) for pair in result["seen"]}
    assert ("running", "queued") in seen  # one training per GPU: the second waited, visibly
    assert ("running", "running") not in seen
    assert ("completed", "completed") in seen
