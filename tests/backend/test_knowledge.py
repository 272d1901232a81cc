"""Knowing the repository: facts found in chunks, the probe phrasing, the identifier index, and the
repository-grounded metrics on hand-made answers."""

from __future__ import annotations

import pytest

from backend.curate import curate, jaccard, join_sample_fields, leakage, shingles
from backend.curate_config import CurateConfig
from backend.evaluate import (api_hallucination, api_recall, fact_accuracy, knowledge_summary, score_output,
                              wrong_then_right)
from backend.facts import extract_facts, fact_samples, probe_samples
from backend.repo_index import RepoIndex, build_index, is_distinctive

MODULE = '''"""Rate cards."""

DEFAULT_CURRENCY = "EUR"


class RateCardError(Exception):
    """A rate card problem."""


class RateCard:
    def quote(self, lane: str, kg: float, *, service: str = "standard", bunker_index: float = 1.0) -> "Quote":
        """Price `kg` on `lane`.

        Raises:
            RateCardError: If no band covers the weight (TM-3001).
        """


def lane_key(origin: str, destination: str) -> str:
    """The canonical lane key."""
    return f"{origin}>{destination}"
'''

CLI_DOC = """# CLI reference

| Option           | Default      | Notes                          |
|------------------|--------------|--------------------------------|
| `--service`      | `standard`   | service level                  |
| `--bunker-index` | `1.0`        | weekly fuel index (see config) |

Run `tidemark quote --kg 5` to price a box. The key `retry.max_attempts` defaults to `4` in the config.

### TM-3004 - currency mismatch

The card's currency is not the configured one.
"""

RST_TABLE = """Summary
=======

================  =====  =========
Key               Type   Default
================  =====  =========
``region``        str    ``north``
``retry.jitter``  float  ``0.1``
================  =====  =========
"""


def facts_of(text, kind, path, heading="", symbol=None):
    return {(f.kind, f.subject, f.detail, f.value) for f in extract_facts(text, kind, path, heading, symbol)}


def test_python_facts_defaults_raises_returns_modules_constants():
    found = facts_of(MODULE, "python", "tidemark/ratecard.py")
    assert ("default", "RateCard.quote", "service", "'standard'") in found
    assert ("default", "RateCard.quote", "bunker_index", "1.0") in found
    assert ("raises", "RateCard.quote", "if no band covers the weight (TM-3001)", "RateCardError") in found
    assert ("returns", "RateCard.quote", "", "'Quote'") in found
    assert ("returns", "lane_key", "", "str") in found
    assert ("module", "RateCard", "", "tidemark.ratecard") in found
    assert ("module", "lane_key", "", "tidemark.ratecard") in found
    assert ("constant", "DEFAULT_CURRENCY", "", "'EUR'") in found
    assert facts_of(MODULE, "python", "tests/test_rates.py") == set()  # a test suite is not the API


def test_a_definition_cut_mid_body_still_gives_its_signature_facts():
    cut = 'class RateCard:\n    def quote(self, kg: float, *, service: str = "express") -> float:\n' \
          '        """Price it."""\n        total = compute(\n            kg,'
    assert ("default", "RateCard.quote", "service", "'express'") in facts_of(cut, "python", "tidemark/ratecard.py")


def test_document_facts_tables_defaults_and_error_code_headings():
    found = facts_of(CLI_DOC, "markdown", "docs/cli.md", "CLI reference")
    assert ("column", "--service", "Default", "standard") in found
    assert ("column", "--bunker-index", "Default", "1.0") in found
    assert not any(f[2] == "Notes" for f in found)  # descriptions are not facts one can state exactly
    assert ("default", "retry.max_attempts", "", "4") in found
    assert ("code", "TM-3004", "currency mismatch", "TM-3004") in found
    rst = facts_of(RST_TABLE, "rst", "docs/configuration.rst", "Summary")
    assert ("column", "retry.jitter", "Default", "0.1") in rst and ("column", "region", "Type", "str") in rst


def test_probes_ask_the_same_fact_in_other_words():
    facts = extract_facts(MODULE, "python", "tidemark/ratecard.py") + extract_facts(CLI_DOC, "markdown",
                                                                                      "docs/cli.md", "CLI reference")
    trained, probes = fact_samples(facts, "tidemark"), probe_samples(facts, "tidemark")
    assert len(trained) == len(probes) == len(facts)
    for t, p, f in zip(trained, probes, facts):
        assert p["fact"] == f.value and f.value in t["output"]  # the training answer states the probe's fact
        assert t["instruction"] != p["instruction"]
        # never a near-duplicate of its training question (curation checks the same at 0.85)
        assert jaccard(shingles(join_sample_fields(t)), shingles(join_sample_fields(p))) < 0.5
        assert len(p["output"]) >= CurateConfig().min_output_chars


def sample(sid, path, task, split=None, **kw):
    row = {"sample_id": sid, "path": path, "start_line": 1, "task": task, "language": "en", "chunk_id": path,
           "instruction": f"Question {sid} about {path}, asked in its own words?", "input": "",
           "output": f"The answer to {sid} is spelled out here in a sentence.", "messages": None}
    return row | kw


def test_curation_keeps_probes_of_train_files_apart_and_never_near_training():
    samples = [sample(f"t{i}", f"docs/f{i}.md", "qa") for i in range(10)]
    samples += [sample(f"p{i}", f"docs/f{i}.md", "probe", fact=f"F{i}",
                       instruction=f"Which value goes with item {i} of file {i} in the docs?",
                       output=f"It is F{i}, as stated there.") for i in range(10)]
    samples.append(sample("p-copy", "docs/f0.md", "probe", fact="x", instruction=samples[0]["instruction"],
                          output=samples[0]["output"]))  # repeats t0's text word for word
    result = curate(samples, CurateConfig(splits={"train": 0.6, "val": 0.2, "test": 0.2}))
    split = {r["sample_id"]: r["split"] for r in result.kept}
    train_files = {r["path"] for r in result.kept if r["split"] == "train"}
    for i in range(10):
        expected = "probe" if f"docs/f{i}.md" in train_files else None
        assert split.get(f"p{i}") == expected, i
    dropped = dict(result.dropped)
    assert "p-copy" not in split and (dropped["p-copy"].startswith(("probe_near_training", "probe_of_held_out")))
    assert any(r.startswith("probe_of_held_out_file") for r in dropped.values())
    assert result.stats["by_split"]["probe"] == sum(1 for s in split.values() if s == "probe") > 0
    assert leakage(result.kept) == []
    # the split of the other samples does not depend on the probes
    without = curate([s for s in samples if s["task"] != "probe"], CurateConfig(splits={"train": 0.6, "val": 0.2,
                                                                                          "test": 0.2}))
    assert {r["sample_id"]: r["split"] for r in without.kept} == {k: v for k, v in split.items() if v != "probe"}


def test_the_probe_split_name_is_reserved():
    with pytest.raises(Exception, match="reserved"):
        CurateConfig(splits={"train": 0.9, "probe": 0.1}).validate()


@pytest.fixture(scope="module")
def index() -> RepoIndex:
    chunks = [{"path": "tidemark/ratecard.py", "kind": "python", "text": MODULE, "symbol": None},
              {"path": "tidemark/__init__.py", "kind": "python", "symbol": "tidemark",
               "text": "from .ratecard import RateCard, lane_key\n"},
              {"path": "docs/cli.md", "kind": "markdown", "text": CLI_DOC, "symbol": None}]
    return RepoIndex(build_index(chunks))


def test_the_index_holds_code_names_qualified_and_the_docs_code_spans(index):
    rows = {(r["name"], r["kind"]) for r in index.rows}
    assert {("tidemark.ratecard.RateCard", "class"), ("tidemark.ratecard.RateCard.quote", "method"),
            ("tidemark.ratecard.RateCardError", "exception"), ("tidemark.ratecard.DEFAULT_CURRENCY", "constant"),
            ("tidemark.RateCard", "reexport"), ("--service", "flag"), ("TM-3004", "error_code"),
            ("retry.max_attempts", "config_key"), ("tidemark quote", "cli_command"),
            ("bunker_index", "parameter")} <= rows
    assert index.roots == {"tidemark"}
    assert is_distinctive("RateCard") and is_distinctive("retry.max_attempts") and not is_distinctive("quote")


def test_api_recall_counts_the_reference_names_an_answer_repeats(index):
    reference = "Call `RateCard.quote` with `--service` set; it raises `RateCardError` (TM-3001 is not indexed)."
    assert api_recall("Use RateCard.quote and --service; mind RateCardError.", reference, index) == 1.0
    assert api_recall("Use RateCard.quote.", reference, index) == pytest.approx(2 / 4)  # and RateCard, its part
    assert api_recall("I have no idea.", reference, index) == 0.0
    assert api_recall("anything", "A reference naming nothing of the repository.", index) is None
    # names the question already gives away are not knowledge: only RateCardError is left to recall
    asked = "Which exception does RateCard.quote raise when --service is wrong?"
    assert api_recall("RateCard.quote raises it.", reference, index, prompt=asked) == 0.0
    assert api_recall("It raises RateCardError.", reference, index, prompt=asked) == 1.0


def test_api_hallucination_on_an_existing_a_missing_and_a_foreign_name(index):
    exists = "from tidemark.ratecard import RateCard\ncard = tidemark.RateCard()"
    missing = "from tidemark.ratecard import RateCard, FastQuote\ntidemark.ratecard.price_box(5)"
    foreign = "import numpy as np\nnp.linalg.norm(x)  # numpy.linalg is not the repository's"
    assert api_hallucination(exists, index) == 0.0
    # claims: tidemark.ratecard, .RateCard, .FastQuote, .price_box — two of four do not exist
    assert api_hallucination(missing, index) == pytest.approx(2 / 4)
    assert index.unknown(index.claims(missing)) == {"tidemark.ratecard.FastQuote", "tidemark.ratecard.price_box"}
    assert api_hallucination(foreign, index) is None  # it claims nothing of the repository's


def test_fact_accuracy_matches_the_whole_fact_only():
    assert fact_accuracy("It defaults to `4` attempts.", "4") == 1.0
    assert fact_accuracy("Error TM-4002 or 40 tries.", "4") == 0.0
    assert fact_accuracy('The currency is "EUR".', "`EUR`") == 1.0
    assert fact_accuracy("x = 1.00", "1.0") == 0.0
    assert fact_accuracy("anything", None) is None
    scores = score_output("It raises RateCardError.", "`RateCard.quote` raises `RateCardError`.",
                          index=RepoIndex(build_index([{"path": "tidemark/ratecard.py", "kind": "python",
                                                        "text": MODULE, "symbol": None}])),
                          fact="RateCardError")
    assert scores["fact_accuracy"] == 1.0 and scores["api_recall"] == pytest.approx(1 / 3)


def test_the_plain_summary_and_the_examples_chosen_by_score():
    def row(sid, fact, base, tuned):
        return {"sample_id": sid, "fact": fact, "base_scores": base, "tuned_scores": tuned}

    right = {"fact_accuracy": 1.0, "api_recall": 1.0, "api_hallucination": 0.0, "rouge_l": 0.9}
    wrong = {"fact_accuracy": 0.0, "api_recall": 0.0, "api_hallucination": 1.0, "rouge_l": 0.1}
    rows = [row("a", "4", wrong, right), row("b", "EUR", wrong, dict(right, rouge_l=0.5)), row("c", "x", right, right),
            row("d", None, {k: v for k, v in wrong.items() if k != "fact_accuracy"}, {"api_recall": 0.5, "rouge_l": 0.3})]
    k = knowledge_summary(rows)
    assert k["questions"] == 4 and k["with_fact"] == 3
    assert k["tuned"]["fact_right"] == 1.0 and k["base"]["fact_right"] == pytest.approx(1 / 3)
    assert k["base"]["invented_names"] == 0.75 and k["tuned"]["invented_names"] == 0.0
    assert [r["sample_id"] for r in wrong_then_right(rows)] == ["a", "b", "d"]
