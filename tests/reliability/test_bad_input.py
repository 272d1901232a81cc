"""A careless user's bad input, through the real `doctune` script: every config file that is not YAML, not there, not
a mapping, with a section that is not one, a value of the wrong type or out of bounds — for every command that takes
`--config` — and bad flags, project names and export folders. Each must exit 2 with one message naming the file or
the field (and the fix), never a traceback. None of them needs Ray: they are refused before it starts. Then a second
`doctune synth` of a run that is still going, in a cluster both commands joined: refused, naming the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from conftest import run_cli, write_tree
from tests.fake_llm import FakeLLMServer

FILES = {  # name → text of the config files the table uses
    "syntax.yaml": "synth:\n  concurrency: [1\n",
    "tab.yaml": "train:\n\tmodel: x\n",
    "list.yaml": "- synth\n- train\n",
    "scalar.yaml": "just some words\n",
    "section5.yaml": "synth: 5\n",
    "concurrency.yaml": "synth:\n  concurrency: abc\n",
    "task_mix.yaml": "synth:\n  task_mix: {qa: x}\n",
    "temperature.yaml": "synth:\n  temperature: 5\n  max_output_tokens: 0\n",
    "curate_range.yaml": "curate:\n  near_dup_threshold: 2\n  num_perm: 100000\n",
    "curate_splits.yaml": "curate:\n  splits: {train: 0.5, test: 0.1}\n",
    "judge5.yaml": "curate: {}\nsynth: 5\n",
    "modules.yaml": "lora:\n  target_modules: q_proj\n",
    "lr.yaml": "training:\n  learning_rate: 1e-4\n",
    "batch.yaml": "training:\n  per_device_train_batch_size: 0\n",
    "preset.yaml": "preset: nope\n",
    "seq.yaml": "model:\n  max_seq_length: 99999999\n",
}

# (what the user typed, with {F} a folder of the files above and {R} a repository, what stderr must say)
CASES = [
    # every command that takes --config, with each kind of broken file
    (["synth", "--project", "p", "--config", "{F}/syntax.yaml"], ["{F}/syntax.yaml:3:1", "invalid YAML"]),
    (["refresh", "--project", "p", "--config", "{F}/temperature.yaml"], ["{F}/temperature.yaml", "synth.temperature"]),
    (["synth", "--project", "p", "--config", "{F}/missing.yaml"], ["{F}/missing.yaml", "no such config file"]),
    (["synth", "--project", "p", "--config", "{F}/list.yaml"], ["{F}/list.yaml", "holds a list"]),
    (["synth", "--project", "p", "--config", "{F}/scalar.yaml"], ["{F}/scalar.yaml", "holds text"]),
    (["synth", "--project", "p", "--config", "{F}/section5.yaml"], ["{F}/section5.yaml", "`synth` must be a mapping"]),
    (["synth", "--project", "p", "--config", "{F}"], ["{F}", "is a folder"]),
    (["synth", "--project", "p", "--config", "{F}/concurrency.yaml"],
     ["{F}/concurrency.yaml", "synth.endpoint.concurrency=\"abc\"", "a whole number"]),
    (["synth", "--project", "p", "--config", "{F}/task_mix.yaml"], ["{F}/task_mix.yaml", "synth.task_mix['qa']"]),
    (["synth", "--project", "p", "--config", "{F}/temperature.yaml"],
     ["{F}/temperature.yaml", "synth.temperature=5 must be at least 0 and at most 2", "synth.max_output_tokens=0"]),
    (["curate", "--project", "p", "--config", "{F}/syntax.yaml"], ["{F}/syntax.yaml:3:1", "invalid YAML"]),
    (["curate", "--project", "p", "--config", "{F}/missing.yaml"], ["{F}/missing.yaml", "no such config file"]),
    (["curate", "--project", "p", "--config", "{F}/list.yaml"], ["{F}/list.yaml", "holds a list"]),
    (["curate", "--project", "p", "--config", "{F}/curate_range.yaml"],
     ["{F}/curate_range.yaml", "curate.near_dup_threshold=2", "curate.num_perm=100000"]),
    (["curate", "--project", "p", "--config", "{F}/curate_splits.yaml"],
     ["{F}/curate_splits.yaml and the command line", "sum to 0.6"]),
    (["curate", "--project", "p", "--judge", "--config", "{F}/judge5.yaml"],
     ["{F}/judge5.yaml", "`synth` must be a mapping"]),
    (["train", "--project", "p", "--config", "{F}/tab.yaml"], ["{F}/tab.yaml:2:1", "invalid YAML"]),
    (["train", "--project", "p", "--config", "{F}/missing.yaml"], ["{F}/missing.yaml", "no such config file"]),
    (["train", "--project", "p", "--config", "{F}/scalar.yaml"], ["{F}/scalar.yaml", "holds text"]),
    (["train", "--project", "p", "--config", "{F}/modules.yaml"],
     ["{F}/modules.yaml", "train.lora.target_modules=\"q_proj\"", "a list of text"]),
    (["train", "--project", "p", "--config", "{F}/lr.yaml"], ["{F}/lr.yaml", "train.training.learning_rate", "1.0e-4"]),
    (["train", "--project", "p", "--config", "{F}/batch.yaml"],
     ["{F}/batch.yaml", "train.training.per_device_train_batch_size=0 must be at least 1"]),
    (["train", "--project", "p", "--config", "{F}/preset.yaml"], ["{F}/preset.yaml", "unknown preset 'nope'"]),
    (["eval", "--run", "r", "--config", "{F}/concurrency.yaml"],
     ["{F}/concurrency.yaml", "synth.endpoint.concurrency"]),
    (["eval", "--run", "r", "--config", "{F}/missing.yaml"], ["{F}/missing.yaml", "no such config file"]),
    (["eval", "--run", "r", "--config", "{F}/syntax.yaml"], ["{F}/syntax.yaml:3:1"]),
    (["config", "show", "--config", "{F}/syntax.yaml"], ["{F}/syntax.yaml:3:1", "invalid YAML"]),
    (["config", "show", "--config", "{F}/list.yaml"], ["{F}/list.yaml", "holds a list"]),
    (["config", "show", "--config", "{F}/missing.yaml"], ["{F}/missing.yaml", "no such config file"]),
    (["config", "show", "--config", "{F}/seq.yaml"], ["{F}/seq.yaml", "train.model.max_seq_length=99999999"]),
    # flags go through the same checks
    (["synth", "--project", "p", "--concurrency", "0"], ["endpoint.concurrency=0", "--concurrency"]),
    (["synth", "--project", "p", "--concurrency", "abc"], ["--concurrency", "invalid int value: 'abc'"]),
    (["synth", "--project", "p", "--rpm", "0", "--max-cost", "-5"], ["endpoint.rpm=0", "synth.max_cost_usd=-5.0"]),
    (["curate", "--project", "p", "--judge-threshold", "11"], ["curate.judge_threshold=11.0", "at most 10"]),
    (["train", "--project", "p", "--preset", "smol", "--max-steps", "0"], ["training.max_steps=0"]),
    (["eval", "--run", "r", "--limit", "0", "--batch-size", "100000"], ["eval.limit=0", "eval.batch_size=100000"]),
    (["ingest", "{R}", "--project", "p", "--max-tokens", "9999999"], ["chunk.max_tokens=9999999"]),
    # project names
    (["ingest", "{R}", "--project", ""], ["invalid project name ''", "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"]),
    (["ingest", "{R}", "--project", "a/b"], ["invalid project name 'a/b'", "^[A-Za-z0-9]"]),
    (["ingest", "{R}", "--project", "a\nb"], ["invalid project name 'a\\nb'"]),
    (["synth", "--project", "../up"], ["invalid project name '../up'"]),
    (["stats", "--project", "x" * 65], ["invalid project name"]),
    # export folders
    (["export", "--project", "p", "--out", "{F}/list.yaml"], ["{F}/list.yaml is a file, not a folder"]),
    (["export", "--project", "p", "--out", "/dev/null"], ["/dev/null is a device"]),
    (["export", "--project", "p", "--out", "/proc/self"], ["/proc/self is under /proc"]),
    (["export", "--project", "p", "--out", "{F}"], ["{F} is not empty", "--force"]),
]


@pytest.mark.slow
def test_bad_input_exits_2_with_one_message_naming_the_file_or_the_field(tmp_path, report):
    folder = write_tree(tmp_path / "cfg", FILES)
    repo = write_tree(tmp_path / "repo", {"a.md": "# A\n\nText."})
    home = tmp_path / "home"

    def fill(text: str) -> str:
        return text.replace("{F}", str(folder)).replace("{R}", str(repo))

    results = [(argv, [fill(s) for s in said], run_cli(*map(fill, argv), home=home, timeout=60))
               for argv, said in CASES]
    wrong = [(argv, out.returncode, [s for s in said if s not in out.stderr], out.stderr[-800:])
             for argv, said, out in results
             if out.returncode != 2 or "Traceback" in out.stderr or out.stderr.count("error:") != 1
             or any(s not in out.stderr for s in said)]
    report(bad_inputs=len(CASES), exit_2=sum(out.returncode == 2 for _, _, out in results),
           tracebacks=sum("Traceback" in out.stderr for _, _, out in results),
           commands=len({" ".join(argv[:2]) if argv[0] == "config" else argv[0] for argv, _ in CASES}))
    assert wrong == []
    assert not (home / "doctune.duckdb").exists()  # refused before anything was opened


@pytest.mark.slow
def test_a_second_synth_of_a_live_run_is_refused_naming_it(tmp_path, report):
    home, env = tmp_path / "h", {"DOCTUNE_API_KEY": "sk-doctune-busy"}
    assert run_cli("cluster", "start", home=home).returncode == 0  # both commands join it, so the run is shared
    try:
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
        with FakeLLMServer(api_key=env["DOCTUNE_API_KEY"], latency_s=0.5) as server:
            argv = ["synth", "--project", "s", "--base-url", server.base_url, "--model", "fake-model",
                    "--max-chunks", "40", "--concurrency", "1"]
            first = subprocess.Popen([str(Path(sys.executable).parent / "doctune"), "--home", str(home), *argv],
                                     env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while server.stats()["requests"] < 2:
                assert first.poll() is None and time.monotonic() < deadline, "the first synthesis sent nothing"
                time.sleep(0.1)
            run_id = json.loads(run_cli("runs", "--json", home=home).stdout)[0]["id"]
            second = run_cli(*argv, home=home, env=env)
            cancelled = run_cli("cancel", run_id, home=home)
            first.wait(timeout=120)
    finally:
        run_cli("cluster", "stop", home=home)
    report(second_exit=second.returncode, names_run=run_id in second.stderr)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert f"run {run_id} is still running" in second.stderr and f"doctune cancel {run_id}" in second.stderr
    assert "doctune runs" in second.stderr and "already taken" not in second.stderr
    assert cancelled.returncode == 0
