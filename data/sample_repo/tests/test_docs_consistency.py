"""Guard rails: the wiki pages must keep up with the code (TMK-497)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tidemark import __version__
from tidemark.config import CONFIG_KEYS
from tidemark.errors import ERROR_CATALOG
from tidemark.manifest import ShipmentManifest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_error_code_is_documented():
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    missing = [code for code in ERROR_CATALOG if f"### {code}" not in text]
    assert missing == []


def test_every_config_key_is_documented():
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    missing = [k.key for k in CONFIG_KEYS if f"``{k.key}``" not in text]
    assert missing == []


def test_changelog_mentions_current_version():
    text = (DOCS / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(__version__)}\]", text, re.M)


def test_sample_manifest_loads_and_is_valid():
    path = ROOT / "examples" / "data" / "manifest-BWF-2024-000123-X.json"
    manifest = ShipmentManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert manifest.problems() == []


@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_notebook_has_no_outputs(name: str):
    notebook = json.loads((ROOT / "examples" / name).read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    assert all(not cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code")
