"""`doctune synth` as a user runs it, then `doctune export` in every format, loaded back with `datasets`.
(Killed with SIGKILL and resumed: tests/reliability/test_synth_kill9.py; the key kept secret:
tests/reliability/test_secrets.py.)"""

import json

import pytest

from backend.config import SAMPLE_REPO
from conftest import run_cli


@pytest.mark.slow
def test_exports_load_with_datasets(tmp_path):
    home = tmp_path / "h"
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    assert run_cli("synth", "--project", "s", "--max-chunks", "30", home=home).returncode == 0
    for fmt in ("alpaca", "sharegpt", "openai", "parquet"):
        res = run_cli("export", "--project", "s", "--format", fmt, "--out", str(tmp_path / "exp" / fmt), home=home)
        assert res.returncode == 0, res.stderr
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


@pytest.mark.slow
def test_ctrl_c_stops_spending_within_two_seconds_and_the_rerun_resumes(tmp_path, report):
    """SIGINT to a real `doctune synth` mid-run: no request reaches the server more than 2 s after the signal, the
    run is `interrupted` (never completed, never curated), and the same command again resumes and finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.fake_llm import FakeLLMServer

    home = tmp_path / "h"
    env = {"DOCTUNE_API_KEY": "sk-doctune-sigint-SECRET-7070"}
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    with FakeLLMServer(latency_s=0.5, api_key=env["DOCTUNE_API_KEY"]) as server:
        args = ["synth", "--project", "s", "--base-url", server.base_url, "--model", "fake-model",
                "--max-chunks", "60", "--concurrency", "4"]
        cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), *args]
        proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            deadline = time.monotonic() + 180
            while server.stats()["requests"] < 12:
                assert proc.poll() is None and time.monotonic() < deadline, "the run sent no 12 requests"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            signalled = time.monotonic()
            stderr = proc.communicate(timeout=90)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(max(0.0, signalled + 4 - time.monotonic()))
        log = server.request_log
        late = [round(e["t"] - signalled, 2) for e in log if e["t"] > signalled + 2]
        sent = len(log)
        assert proc.returncode == 130, stderr
        assert late == [], f"requests received more than 2 s after SIGINT: {late}"
        runs = json.loads(run_cli("runs", "--json", home=home).stdout)
        synth = [r for r in runs if r["kind"] == "synth"]
        assert len(synth) == 1 and synth[0]["status"] == "interrupted", synth

        out = run_cli(*args, "--json", home=home, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        resumed = json.loads(out.stdout)
        total = server.stats()["requests"]
    assert resumed["run_id"] == synth[0]["id"] and resumed["resuming"]
    assert resumed["status"] == "completed" and resumed["failed"] == 0 and resumed["dataset"]
    assert 0 < resumed["done_before"] < resumed["units"]
    # what was answered before the signal was kept: only the requests cancelled in flight went out again
    assert total <= resumed["units"] + 4
    report(requests_before_signal=sent, requests_after_2s=len(late), resumed_units=resumed["units"],
           done_before=resumed["done_before"], requests_in_all=total)
