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
