"""`doctune synth` as a user runs it: killed with SIGKILL mid-run and resumed, the key kept secret,
exports that `datasets` loads."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests.fake_llm import FakeLLMServer

KEY = "sk-doctune-cli-SECRET-7331"


def synth_args(server, *extra):
    return ["synth", "--project", "s", "--base-url", server.base_url, "--model", "fake-model",
            "--max-chunks", "40", "--concurrency", "4", *extra]


def final_rows(home: Path):
    out = run_cli("export", "--project", "s", "--format", "openai", "--out", str(home / "x"), "--json", home=home)
    assert out.returncode == 0, out.stderr
    rows = []
    for split in ("train", "val", "test"):
        f = home / "x" / f"{split}.jsonl"
        if f.exists():
            rows += [(split, line) for line in f.read_text().splitlines()]
    return sorted(rows)


@pytest.mark.slow
def test_kill9_mid_run_then_resume_gives_the_same_dataset(tmp_path):
    env = {"DOCTUNE_API_KEY": KEY}
    with FakeLLMServer(latency_s=0.15, api_key=KEY) as server:
        # the uninterrupted reference
        ref = tmp_path / "ref"
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=ref).returncode == 0
        out = run_cli(*synth_args(server, "--json"), home=ref, env=env)
        assert out.returncode == 0, out.stderr
        reference = json.loads(out.stdout)
        ref_requests = server.stats()["requests"]
        assert reference["failed"] == 0 and ref_requests == reference["units"]

        # the same run, killed with SIGKILL twice along the way, then resumed to the end
        home = tmp_path / "crash"
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
        server.reset_stats()
        cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), *synth_args(server)]
        kills = 0
        for delay in (9.0, 7.0):
            proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        out = run_cli(*synth_args(server, "--json"), home=home, env=env)
        assert out.returncode == 0, out.stderr
        resumed = json.loads(out.stdout)
        assert resumed["resuming"] and resumed["status"] == "succeeded"
        total_requests = server.stats()["requests"]
    assert kills >= 1
    # never pays twice: at most the requests in flight at each kill (concurrency 4) were sent again
    assert ref_requests <= total_requests <= ref_requests + 4 * kills
    assert final_rows(home) == final_rows(ref)


@pytest.mark.slow
def test_key_appears_nowhere_and_exports_load(tmp_path):
    home = tmp_path / "h"
    started = time.time()
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    with FakeLLMServer(api_key=KEY) as server:
        out = run_cli(*synth_args(server, "--max-chunks", "10"), home=home, env={"DOCTUNE_API_KEY": KEY})
        assert out.returncode == 0, out.stderr
        assert all(r["authorization"] == f"Bearer {KEY}" for r in server.request_log)
    outputs = [out.stdout, out.stderr]
    for fmt in ("alpaca", "sharegpt", "openai", "parquet"):
        res = run_cli("export", "--project", "s", "--format", fmt, "--out", str(tmp_path / "exp" / fmt), home=home)
        assert res.returncode == 0, res.stderr
        outputs += [res.stdout, res.stderr]
    for text in outputs:
        assert KEY not in text
    searched = 0
    # Ray's own logs of the sessions these commands started (workers, actors, raylet, GCS)
    ray_sessions = [p for p in Path("/tmp/ray").glob("session_2*") if p.stat().st_mtime >= started - 1]
    assert ray_sessions
    for root in (home, tmp_path / "exp", *ray_sessions):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink() and not f.is_socket():
                searched += 1
                assert KEY.encode() not in f.read_bytes(), f"key found in {f}"
    assert searched > 10

    from datasets import load_dataset

    cache = tmp_path / "hf"
    for fmt, column in (("alpaca", "instruction"), ("sharegpt", "conversations"), ("openai", "messages")):
        files = {p.stem: str(p) for p in (tmp_path / "exp" / fmt).glob("*.jsonl") if "provenance" not in p.name}
        ds = load_dataset("json", data_files=files, cache_dir=str(cache))
        assert column in ds["train"].column_names and ds["train"].num_rows > 0
    files = {p.stem: str(p) for p in (tmp_path / "exp" / "parquet").glob("*.parquet")}
    assert load_dataset("parquet", data_files=files, cache_dir=str(cache))["train"].num_rows > 0
    info = json.loads((tmp_path / "exp" / "alpaca" / "dataset_info.json").read_text())
    assert all((tmp_path / "exp" / "alpaca" / e["file_name"]).exists() for e in info.values())
