import json

import pytest

from backend.readers import ReadError, classify, read_sections


def lines_of(text: str, section) -> str:
    return "\n".join(text.splitlines()[section.start_line - 1:section.end_line])


def test_classify_kinds():
    assert classify("docs/a.md") == ("markdown", "markdown")
    assert classify("docs/a.rst") == ("rst", "rst")
    assert classify("README") == ("text", None)
    assert classify("x/page.HTML") == ("html", "html")
    assert classify("nb.ipynb")[0] == "notebook"
    assert classify("pkg/mod.py") == ("python", "python")
    assert classify("api/openapi.yaml") == ("config", "yaml")
    assert classify("web/app.ts") == ("code", "ts")
    assert classify("img/logo.png") == (None, None)


def test_markdown_heading_paths_lines_and_fences():
    text = """---
title: front matter is not prose
---
# Guide

Intro paragraph.

## Install

```bash
# not a heading inside a fence
pip install x
```

### From source
Build it.

Setext Title
============

Body under setext.
"""
    kind, sections = read_sections("docs/guide.md", text, "markdown")
    assert kind == "markdown"
    paths = [s.heading_path for s in sections]
    assert paths == [("Guide",), ("Guide", "Install"), ("Guide", "Install", "From source"), ("Setext Title",)]
    install = sections[1]
    assert "# not a heading inside a fence" in install.text
    assert lines_of(text, install) == install.text
    assert all("front matter" not in s.text for s in sections)
    for s in sections:
        assert lines_of(text, s) == s.text


def test_markdown_headings_follow_commonmark_blocks():
    text = """# Top

- a list item

  # not a section: inside the list item

> # nor inside a quote

| a | b |
---

```a```b
## After inline code
"""
    _, sections = read_sections("docs/x.md", text, "markdown")
    # a rule under a table row is no heading; backticks in an info string make inline code, not a fence
    assert [s.heading_path for s in sections] == [("Top",), ("Top", "After inline code")]
    assert (sections[0].start_line, sections[0].end_line) == (1, 12)


def test_rst_levels_by_adornment_order():
    text = """=========
Top Title
=========

Lead.

Section A
---------

Text A.

Sub A1
~~~~~~

Text A1.

Section B
---------

Text B.
"""
    _, sections = read_sections("docs/x.rst", text, "rst")
    assert [s.heading_path for s in sections] == [
        ("Top Title",), ("Top Title", "Section A"), ("Top Title", "Section A", "Sub A1"), ("Top Title", "Section B")]
    assert sections[0].start_line == 1  # the overline belongs to the title
    for s in sections:
        assert lines_of(text, s) == s.text


def test_html_skips_script_and_style_and_keeps_source_lines():
    text = """<html><head><title>t</title><style>body{color:red}</style></head>
<body>
<h1>Dock etiquette</h1>
<p>Be on time.</p>
<script>alert("never executed, never ingested")</script>
<h2>Forklifts</h2>
<p>Yield to
forklifts.</p>
</body></html>"""
    _, sections = read_sections("legacy.html", text, "html")
    assert [s.heading_path for s in sections] == [("Dock etiquette",), ("Dock etiquette", "Forklifts")]
    joined = "\n".join(s.text for s in sections)
    assert "alert" not in joined and "color:red" not in joined
    assert "Yield to forklifts." in sections[1].text
    assert sections[0].start_line == 3 and sections[1].start_line == 6


def test_notebook_cells_and_bad_notebook():
    nb = {"nbformat": 4, "metadata": {}, "cells": [
        {"cell_type": "markdown", "source": ["# Quickstart\n", "Load a manifest."]},
        {"cell_type": "code", "source": "import tidemark\nprint(1)"},
        {"cell_type": "markdown", "source": "## Next\nMore."},
    ]}
    _, sections = read_sections("q.ipynb", json.dumps(nb), "notebook")
    assert sections[0].heading_path == ("Quickstart",)
    assert "```python\nimport tidemark" in sections[0].text
    assert (sections[0].start_line, sections[0].end_line) == (1, 2)  # cells, not lines
    assert sections[1].heading_path == ("Quickstart", "Next") and sections[1].start_line == 3
    with pytest.raises(ReadError, match="notebook"):
        read_sections("bad.ipynb", "{not json", "notebook")


def test_openapi_operations_become_sections():
    text = """openapi: 3.0.0
info:
  title: Gateway
  version: "1.2"
  description: Routes freight.
paths:
  /manifests/{id}:
    get:
      operationId: getManifest
      summary: Fetch one manifest
      parameters:
        - name: id
          in: path
          required: true
          schema: {type: string}
      responses:
        "200": {description: the manifest}
    delete:
      summary: Drop it
      responses:
        "204": {description: gone}
components:
  schemas:
    Manifest:
      type: object
      properties:
        id: {type: string}
"""
    kind, sections = read_sections("api/openapi.yaml", text, "config")
    assert kind == "spec"
    by_path = {s.heading_path: s for s in sections}
    get = by_path[("Gateway", "GET /manifests/{id}")]
    assert get.symbol == "getManifest" and "id (path, string, required)" in get.text
    assert text.splitlines()[get.start_line - 1].strip() == "get:"
    assert ("Gateway", "DELETE /manifests/{id}") in by_path
    assert ("Gateway", "schemas", "Manifest") in by_path
    kind, _ = read_sections("conf/settings.yaml", "a: 1\n", "config")
    assert kind == "config"


def test_python_sections_from_ast():
    text = '''"""Rate cards for lanes."""
import os

DEFAULT_CURRENCY = "EUR"


def quote(lane: str, kg: float = 1.0) -> float:
    """Price a lane."""
    return kg * 2


class RateCard:
    """A card."""

    scale: int = 3

    def price(self, lane: str) -> float:
        """Price."""
        return 1.0

    async def refresh(self) -> None:
        pass
'''
    _, sections = read_sections("src/tidemark/ratecard.py", text, "python")
    paths = [s.heading_path for s in sections]
    assert paths == [("tidemark.ratecard",), ("tidemark.ratecard", "<module>"), ("tidemark.ratecard", "quote"),
                     ("tidemark.ratecard", "RateCard")]
    assert 'DEFAULT_CURRENCY = "EUR"' in sections[1].text and "import os" not in sections[1].text
    quote = sections[2]
    assert quote.text.startswith("def quote(lane: str, kg: float = 1.0) -> float:") and quote.symbol == "quote"
    card = sections[3]
    assert [p.symbol for p in card.parts] == ["RateCard", "RateCard.price", "RateCard.refresh"]
    assert card.parts[1].text.startswith("class RateCard:\n    def price")


def test_python_syntax_error_falls_back_to_whole_file():
    _, sections = read_sections("broken.py", "def f(:\n    pass\n", "python")
    assert len(sections) == 1 and sections[0].split_language == "python"
