"""Links planted in an export folder: `OUT/train.jsonl.tmp` (the temporary name an export once used) and final names
(`OUT/train.jsonl`, `OUT/manifest.json`) pointing at a victim file. `doctune export --out OUT` refuses the folder
(it is not empty), then with `--force` writes every file of its own through a temporary file of a new name and
renames it into place: the victims are untouched, the links at final names are replaced by files."""

from __future__ import annotations

import json

import pytest

from backend.config import SAMPLE_REPO
from conftest import run_cli

PLANTED = ("train.jsonl.tmp", "train.provenance.jsonl.tmp", "manifest.json.tmp", "dataset_info.json.tmp",
           "train.jsonl", "manifest.json")


@pytest.mark.slow
def test_export_never_writes_through_a_planted_link(tmp_path, report):
    home, out = tmp_path / "h", tmp_path / "out"
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    assert run_cli("synth", "--project", "s", "--max-chunks", "20", home=home).returncode == 0
    out.mkdir()
    victims = {}
    for name in PLANTED:
        victim = tmp_path / f"victim-{name}"
        victim.write_text(f"precious {name}\n")
        (out / name).symlink_to(victim)
        victims[victim] = victim.read_text()

    refused = run_cli("export", "--project", "s", "--out", str(out), home=home)
    assert refused.returncode == 2 and "is not empty" in refused.stderr and "--force" in refused.stderr

    res = run_cli("export", "--project", "s", "--out", str(out), "--force", "--json", home=home)
    assert res.returncode == 0, res.stderr
    written = json.loads(res.stdout)["files"]
    untouched = sum(v.read_text() == text for v, text in victims.items())
    report(links_planted=len(PLANTED), victims_untouched=untouched, files_written=len(written))
    assert untouched == len(victims)
    for name in ("train.jsonl", "manifest.json"):  # the links at final names are now the export's own files
        assert not (out / name).is_symlink() and (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "train.jsonl" in manifest["files"]
    assert all((out / name).is_symlink() for name in PLANTED if name.endswith(".tmp"))  # never used, never followed
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind
