"""`doctune review --file EDITS.jsonl` as a team reviewing in bulk runs it, and `doctune datasets --json`'s
lineage; bad files get one message naming the file, the line, the field and the fix (exit 2)."""

import json

import pytest

from backend.config import SAMPLE_REPO
from conftest import run_cli


def test_a_bad_review_file_is_refused_before_anything_starts(tmp_path):
    home = tmp_path / "h"
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"sample_id": "a", "output": "fine"}\n{"sample_id": "b", "output": "x", oops}\n')
    out = run_cli("review", "--project", "s", "--file", str(edits), home=home)
    assert out.returncode == 2 and f"{edits} line 2: not JSON" in out.stderr and "one JSON object" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli("review", "--project", "s", "--file", str(tmp_path / "missing.jsonl"), home=home)
    assert out.returncode == 2 and "missing.jsonl: cannot be read" in out.stderr
    assert not (home / "doctune.duckdb").exists()  # refused before Ray or the store started


@pytest.mark.slow
def test_review_from_a_file_makes_a_version_with_its_lineage(tmp_path):
    home = tmp_path / "h"
    assert run_cli("cluster", "start", home=home).returncode == 0
    try:
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
        assert run_cli("synth", "--project", "s", "--max-chunks", "30", home=home).returncode == 0
        out = run_cli("export", "--project", "s", "--format", "openai", "--out", str(tmp_path / "v1"), home=home)
        assert out.returncode == 0, out.stderr
        from pyarrow import json as pj  # the provenance file names every exported sample's id and task

        prov = pj.read_json(tmp_path / "v1" / "train.provenance.jsonl").to_pylist()
        multi = next(p for p in prov if p["task"] == "multiturn")
        single = next(p for p in prov if p["task"] != "multiturn")
        edits = tmp_path / "edits.jsonl"
        edits.write_text("\n".join(json.dumps(line) for line in [
            {"sample_id": multi["sample_id"], "output": "BULK-REVIEWED last answer"},
            {"sample_id": single["sample_id"], "reject": True}]) + "\n")
        out = run_cli("review", "--project", "s", "--file", str(edits), "--note", "bulk pass", "--json", home=home)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"version": "v2", "parent": "v1", "edited": 1, "rejected": 1}
        listed = json.loads(run_cli("datasets", "--project", "s", "--json", home=home).stdout)
        assert [(d["version"], d["parent"], d["operation"], d["current"]) for d in listed] == [
            ("v1", None, "synthesis", False), ("v2", "v1", "review", True)]
        assert listed[1]["note"] == "bulk pass" and listed[1]["samples"] == listed[0]["samples"] - 1
        # export takes the current version: the edit is in the multi-turn sample's last turn
        out = run_cli("export", "--project", "s", "--format", "openai", "--out", str(tmp_path / "v2"), home=home)
        assert out.returncode == 0, out.stderr
        assert "BULK-REVIEWED last answer" in (tmp_path / "v2" / "train.jsonl").read_text()

        # every problem of a file at once, each with its line, field and fix; a sample the version lacks
        edits.write_text('{"sample_id": "x", "split": "test"}\n{"output": "y"}\n')
        out = run_cli("review", "--project", "s", "--file", str(edits), home=home)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"{edits} line 1: field split cannot be edited; use instruction, input, output, messages" in out.stderr
        assert f"{edits} line 2: sample_id is missing" in out.stderr
        edits.write_text('{"sample_id": "no-such-sample", "output": "y"}\n')
        out = run_cli("review", "--project", "s", "--file", str(edits), home=home)
        assert out.returncode == 2 and "no-such-sample" in out.stderr
        assert "sample ids from `doctune export" in out.stderr
        assert "Traceback" not in out.stderr
        other = next(p for p in prov if p["task"] != "multiturn" and p["sample_id"] != single["sample_id"])
        edits.write_text(json.dumps({"sample_id": other["sample_id"], "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
        out = run_cli("review", "--project", "s", "--file", str(edits), home=home)
        assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
        assert f"{edits}: sample {other['sample_id']} is single-turn: edit its instruction" in out.stderr
        out = run_cli("review", "--project", "zzz", "--file", str(edits), home=home)
        assert out.returncode == 2 and "no project 'zzz'" in out.stderr
    finally:
        run_cli("cluster", "stop", home=home)
