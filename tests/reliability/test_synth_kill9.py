"""`doctune synth` killed with SIGKILL at ten random moments and resumed each time: the final dataset is the one
an uninterrupted run makes, and the API calls exceed the uninterrupted count by at most what was in flight at
each kill (the concurrency)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from conftest import run_cli
from tests.fake_llm import FakeLLMServer

KEY = "sk-doctune-kill9-SECRET-1111"
CONCURRENCY = 4
KILLS = 10


def synth_args(server, *extra):
    return ["synth", "--project", "s", "--base-url", server.base_url, "--model", "fake-model",
            "--max-chunks", "80", "--concurrency", str(CONCURRENCY), *extra]


def final_rows(home: Path, out: Path):
    res = run_cli("export", "--project", "s", "--format", "openai", "--out", str(out), "--json", home=home)
    assert res.returncode == 0, res.stderr
    return sorted((split, line) for split in ("train", "val", "test") if (out / f"{split}.jsonl").exists()
                  for line in (out / f"{split}.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_ten_random_kills_then_resume_give_the_same_dataset(tmp_path, report):
    env = {"DOCTUNE_API_KEY": KEY}
    rng = random.Random(20261128)
    with FakeLLMServer(latency_s=0.3, api_key=KEY) as server:
        ref = tmp_path / "ref"
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=ref).returncode == 0
        out = run_cli(*synth_args(server, "--json"), home=ref, env=env)
        assert out.returncode == 0, out.stderr
        reference = json.loads(out.stdout)
        ref_requests = server.stats()["requests"]
        assert reference["failed"] == 0 and ref_requests == reference["units"]

        home = tmp_path / "crash"
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
        server.reset_stats()
        cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), *synth_args(server)]
        moments = []
        while len(moments) < KILLS:
            before = server.stats()["requests"]
            after_requests, extra_s = rng.randint(1, 8), rng.uniform(0.0, 0.5)  # a random moment mid-run
            proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while server.stats()["requests"] < before + after_requests and proc.poll() is None:
                assert time.monotonic() < deadline, "the resumed run sent nothing for 120 s"
                time.sleep(0.02)
            time.sleep(extra_s)
            if proc.poll() is not None:
                break  # it finished before this kill: too few units left
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            moments.append(server.stats()["requests"] - before)
        out = run_cli(*synth_args(server, "--json"), home=home, env=env)
        assert out.returncode == 0, out.stderr
        resumed = json.loads(out.stdout)
        assert resumed["resuming"] and resumed["status"] == "completed" and resumed["failed"] == 0
        total_requests = server.stats()["requests"]
    assert len(moments) == KILLS, f"only {len(moments)} kills landed mid-run"
    # never pays twice: at most the requests in flight at each kill were sent again
    assert ref_requests <= total_requests <= ref_requests + CONCURRENCY * KILLS
    same = final_rows(home, tmp_path / "x-crash") == final_rows(ref, tmp_path / "x-ref")
    assert same
    report(kills=len(moments), requests_between_kills=moments, units=reference["units"],
           requests_uninterrupted=ref_requests, requests_with_kills=total_requests,
           requests_sent_twice=total_requests - ref_requests, bound=CONCURRENCY * KILLS,
           dataset_identical=same, samples=reference["samples"])
