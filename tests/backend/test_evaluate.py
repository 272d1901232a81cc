import itertools
import random

import pytest

from backend.evaluate import (METRICS, aggregate, bleu, chrf, combine_pairwise, degenerate_kind, degenerate_summary,
                              exact_match, flips, load_retention_set, paired_bootstrap, rouge_l, score_output,
                              syntax_valid, win_rate)
from backend.sandbox import extract_python_blocks, python_syntax_errors

REF = "The quick brown fox jumps over the lazy dog near the river bank"
PARTIAL = "The quick brown fox sleeps under the lazy cat near a river"
# no word and no character in common with REF (chrF scores character n-grams)
DISJOINT = "0123 4567 89 #% @@ 314159 2718"


# --- per-output metrics -----------------------------------------------------------------------------

@pytest.mark.parametrize("metric", [rouge_l, bleu, chrf])
def test_similarity_metrics_identical_disjoint_partial(metric):
    assert metric(REF, REF) == pytest.approx(1.0)
    assert metric(DISJOINT, REF) < 0.1
    assert 0.1 < metric(PARTIAL, REF) < 0.9


def test_rouge_l_tokenizes_punctuation_and_ignores_case():
    assert rouge_l("FOO(x)", "foo( x )") == pytest.approx(1.0)
    assert rouge_l("", "") == 1.0
    assert rouge_l("", "something") == 0.0
    # LCS of [a b c d] and [a c d e] is [a c d]: P = R = 3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)


def test_bleu_short_sentence_is_smoothed_not_zero():
    # no 4-gram in common, but most words are: sentence BLEU must not collapse to 0
    assert bleu("the cat sat", "the cat sat down") > 0


def test_exact_match_collapses_whitespace():
    assert exact_match("  a   b\n c ", "a b c") == 1.0
    assert exact_match("a b c", "a b d") == 0.0
    assert exact_match("ab", "a b") == 0.0


def test_syntax_valid_none_zero_one():
    assert syntax_valid("Just prose, no code here.") is None
    assert syntax_valid("Do this:\n\n```python\nx = [1, 2]\nprint(x)\n```\n") == 1.0
    assert syntax_valid("```python\ndef f(:\n    pass\n```") == 0.0
    # one bad block among good ones fails the whole output
    assert syntax_valid("```python\nx = 1\n```\n\n```python\nif x\n```") == 0.0


def test_score_output_keys():
    scores = score_output("```python\nx = 1\n```", "```python\nx = 1\n```")
    assert tuple(scores) == METRICS
    assert scores["exact_match"] == 1.0 and scores["syntax_valid"] == 1.0
    assert scores["rouge_l"] == pytest.approx(1.0)


# --- paired bootstrap and aggregation ---------------------------------------------------------------

def test_bootstrap_constant_improvement():
    rng = random.Random(1)
    base = [rng.random() * 0.5 for _ in range(50)]
    tuned = [b + 0.2 for b in base]
    r = paired_bootstrap(base, tuned)
    assert r["n"] == 50
    assert r["delta"] == pytest.approx(0.2)
    assert r["tuned"] - r["base"] == pytest.approx(0.2)
    low, high = r["ci"]
    assert low - 1e-9 <= 0.2 <= high + 1e-9
    assert low > 0


def test_bootstrap_noise_ci_contains_zero():
    rng = random.Random(2)
    base = [rng.random() for _ in range(200)]
    tuned = [rng.random() for _ in range(200)]  # same distribution
    r = paired_bootstrap(base, tuned)
    assert r["ci"][0] < 0 < r["ci"][1]


def test_bootstrap_is_deterministic_per_seed():
    rng = random.Random(3)
    base = [rng.random() for _ in range(30)]
    tuned = [rng.random() for _ in range(30)]
    assert paired_bootstrap(base, tuned, seed=7) == paired_bootstrap(base, tuned, seed=7)


def test_bootstrap_skips_none_and_handles_empty():
    r = paired_bootstrap([0.1, None, 0.3, 0.5], [0.2, 0.9, None, 0.6])
    assert r["n"] == 2
    assert r["base"] == pytest.approx(0.3) and r["tuned"] == pytest.approx(0.4)
    assert r["delta"] == pytest.approx(0.1)
    empty = paired_bootstrap([None, 1.0], [0.5, None])
    assert empty == {"base": None, "tuned": None, "delta": None, "ci": None, "n": 0}
    with pytest.raises(ValueError):
        paired_bootstrap([0.1], [0.1, 0.2])


def rows_for(base_tuned: list[tuple[dict, dict]]) -> list[dict]:
    return [{"sample_id": f"s{i}", "base": b, "tuned": t} for i, (b, t) in enumerate(base_tuned)]


def test_aggregate_marks_lower_is_better():
    rows = rows_for([({"rouge_l": 0.2, "loss": 3.0}, {"rouge_l": 0.5, "loss": 2.0}),
                     ({"rouge_l": 0.4, "loss": 2.5}, {"rouge_l": 0.6, "loss": 2.1}),
                     ({"rouge_l": 0.1}, {"rouge_l": 0.3, "loss": 1.0})])
    out = aggregate(rows, ["rouge_l", "loss", "perplexity"])
    assert out["rouge_l"]["better"] == "higher" and out["rouge_l"]["n"] == 3
    assert out["rouge_l"]["delta"] == pytest.approx((0.3 + 0.2 + 0.2) / 3)
    assert out["loss"]["better"] == "lower" and out["loss"]["n"] == 2
    assert out["loss"]["delta"] == pytest.approx(((2.0 - 3.0) + (2.1 - 2.5)) / 2)  # tuned - base, negative
    assert out["perplexity"]["better"] == "lower" and out["perplexity"]["n"] == 0


def test_flips():
    rows = rows_for([({"rouge_l": 0.2, "loss": 3.0}, {"rouge_l": 0.5, "loss": 2.0}),   # s0 better
                     ({"rouge_l": 0.6, "loss": 2.0}, {"rouge_l": 0.3, "loss": 2.5}),   # s1 worse
                     ({"rouge_l": 0.5, "loss": 2.0}, {"rouge_l": 0.52, "loss": 2.01}),  # s2 within tolerance
                     ({"rouge_l": None}, {"rouge_l": 0.9})])                            # s3 skipped
    assert flips(rows, "rouge_l") == {"improved": ["s0"], "regressed": ["s1"]}
    # loss is lower-is-better whether inferred or explicit
    assert flips(rows, "loss") == {"improved": ["s0"], "regressed": ["s1"]}
    assert flips(rows, "loss", lower_is_better=True) == {"improved": ["s0"], "regressed": ["s1"]}
    assert flips(rows, "rouge_l", tolerance=0.01) == {"improved": ["s0", "s2"], "regressed": ["s1"]}


# --- pairwise judging ---------------------------------------------------------------------------------

EXPECTED_PAIRWISE = {
    # (A=base,B=tuned verdict, A=tuned,B=base verdict) -> outcome for tuned
    ("B", "A"): "win",    # tuned preferred in both positions
    ("A", "B"): "loss",   # base preferred in both positions
    ("A", "A"): "tie",    # always first: position bias
    ("B", "B"): "tie",    # always second: position bias
    ("tie", "tie"): "tie",
    ("B", "tie"): "tie",
    ("tie", "A"): "tie",
    ("A", "tie"): "tie",
    ("tie", "B"): "tie",
}


def test_combine_pairwise_all_nine():
    assert set(EXPECTED_PAIRWISE) == set(itertools.product(("A", "B", "tie"), repeat=2))
    for (ab, ba), outcome in EXPECTED_PAIRWISE.items():
        assert combine_pairwise(ab, ba) == outcome, (ab, ba)


def test_combine_pairwise_rejects_unknown():
    assert combine_pairwise(" b ", "a") == "win"
    with pytest.raises(ValueError):
        combine_pairwise("C", "A")


def test_win_rate():
    outcomes = ["win"] * 6 + ["tie"] * 2 + ["loss"] * 2
    r = win_rate(outcomes)
    assert (r["win"], r["tie"], r["loss"]) == (6, 2, 2)
    assert r["win_rate"] == pytest.approx(0.7)
    low, high = r["ci"]
    assert 0.0 <= low <= 0.7 <= high <= 1.0
    assert win_rate(["win"] * 5)["ci"] == [1.0, 1.0]
    assert win_rate([]) == {"win": 0, "tie": 0, "loss": 0, "win_rate": None, "ci": None}
    with pytest.raises(ValueError):
        win_rate(["draw"])


# --- retention set ------------------------------------------------------------------------------------

def test_retention_set():
    items = load_retention_set()
    assert len(items) >= 20
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids))
    with_code = 0
    for it in items:
        assert {"id", "instruction", "input", "output", "task"} <= set(it)
        assert it["task"] in {"codegen", "explain", "qa"}
        assert it["instruction"].strip() and it["output"].strip()
        assert python_syntax_errors(it["output"]) == [], it["id"]
        if it["task"] == "codegen":
            assert extract_python_blocks(it["output"]), f"{it['id']}: codegen reference has no code"
        with_code += bool(extract_python_blocks(it["output"]))
    assert with_code >= len(items) // 2


def test_load_retention_set_reports_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x"}\n\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":3:"):
        load_retention_set(path)


def test_code_passes_runs_against_the_repository(tmp_path):
    from backend.evaluate import code_passes

    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    ok = "Here:\n```python\nfrom mylib import double\nassert double(21) == 42\n```"
    wrong = "```python\nfrom mylib import double\nassert double(2) == 5\n```"
    assert code_passes(ok, tmp_path) == 1.0
    assert code_passes(wrong, tmp_path) == 0.0
    assert code_passes("```python\n```", tmp_path) == 0.0  # an empty block did nothing
    assert code_passes("no code at all", tmp_path) == 0.0


@pytest.mark.parametrize("text, kind", [
    ("", "empty"), ("  \n\t", "empty"), (None, "empty"),
    ("``````", "non_text"), ("\ufffd\ufffd\ufffd\ufffd", "non_text"),
    ("ab \ufffd\ufffd\ufffd\ufffd\ufffd\ufffd cd", "non_text"),
    ("!!! ... ??? ;;; ((( )))", "non_text"),
    ("the berth the berth the berth the berth the berth the berth the berth", "repetition"),
    ("a" * 40, "repetition"),
    ("Use tidemark.berth() with the ZEBRA window, then call seal_with() before noon.", None),
    ("```python\ndef double(x):\n    return 2 * x\n```", None),
    ("ok", None),
])
def test_degenerate_kind_names_empty_non_text_and_loops(text, kind):
    assert degenerate_kind(text) == kind


def test_degenerate_summary_counts_each_side_and_says_when_it_dominates():
    rows = [{"base_output": "", "tuned_output": "Call berth() first, then seal_with()."},
            {"base_output": "", "tuned_output": "``` ```"},
            {"base_output": "Use the ZEBRA window.", "tuned_output": "x x x x x x x x x x x x x x x x"},
            {"base_output": "\ufffd\ufffd\ufffd", "tuned_output": "It returns twice its argument."}]
    s = degenerate_summary(rows)
    assert s["base"] == {"n": 4, "empty": 2, "non_text": 1, "repetition": 0, "degenerate": 3, "share": 0.75,
                         "dominates": True}
    assert s["tuned"]["non_text"] == 1 and s["tuned"]["repetition"] == 1 and s["tuned"]["degenerate"] == 2
    assert s["tuned"]["dominates"]  # half of the outputs: no metric on them says what the model knows
    assert degenerate_summary(rows[:1])["tuned"]["dominates"] is False
    assert degenerate_summary([])["base"] == {"n": 0, "empty": 0, "non_text": 0, "repetition": 0, "degenerate": 0,
                                              "share": 0.0, "dominates": False}


# --- a continued adapter against the previous one ---------------------------------------------------

def _version(files: dict[str, list[str]]) -> list[dict]:
    """Dataset rows: two samples per chunk of each file (a chunk id stands for the chunk's text)."""
    return [{"sample_id": f"{path}:{chunk}:{i}", "path": path, "chunk_id": chunk}
            for path, chunks in files.items() for chunk in chunks for i in range(2)]


def test_changed_files_compares_each_file_s_chunks_across_versions():
    from backend.evaluate import changed_files

    old = _version({"a.md": ["a1", "a2"], "b.md": ["b1"], "c.md": ["c1"], "gone.md": ["g1"]})
    # a.md: one chunk's text edited; b.md: the same chunks (re-curated: fewer samples); new.md appears
    new = _version({"a.md": ["a1", "a2x"], "b.md": ["b1"], "c.md": ["c1"], "new.md": ["n1"]})[:-1]
    new = [r for r in new if r["sample_id"] != "b.md:b1:1"]
    assert changed_files(old, new) == {"added": ["new.md"], "changed": ["a.md"], "deleted": ["gone.md"],
                                       "unchanged": ["b.md", "c.md"]}
    assert changed_files(old, old) == {"added": [], "changed": [], "deleted": [], "unchanged": ["a.md", "b.md", "c.md",
                                                                                                 "gone.md"]}


def test_compare_by_change_groups_prompts_by_their_file_and_pairs_the_adapters():
    from backend.evaluate import change_group, compare_by_change

    files = {"added": ["new.md"], "changed": ["a.md"], "deleted": ["gone.md"], "unchanged": ["b.md"]}
    assert [change_group(p, files) for p in ("new.md", "a.md", "b.md", "gone.md", None)] == [
        "changed", "changed", "unchanged", None, None]
    # the continued adapter learned the changed files (0.2 -> 0.9) and kept the unchanged one (0.8 -> 0.8)
    rows = [{"path": "a.md", "eval_set": "probe", "previous": {"rouge_l": 0.2}, "continued": {"rouge_l": 0.9}},
            {"path": "new.md", "eval_set": "test", "previous": {"rouge_l": 0.2}, "continued": {"rouge_l": 0.9}},
            {"path": "b.md", "eval_set": "probe", "previous": {"rouge_l": 0.8}, "continued": {"rouge_l": 0.8}},
            {"path": "gone.md", "eval_set": "probe", "previous": {"rouge_l": 0.0}, "continued": {"rouge_l": 1.0}}]
    out = compare_by_change(rows, files, ["rouge_l"])
    changed, unchanged = out["changed"], out["unchanged"]
    assert (changed["n"], changed["sets"]) == (2, {"probe": 1, "test": 1})
    assert changed["metrics"]["rouge_l"]["previous"] == pytest.approx(0.2)
    assert changed["metrics"]["rouge_l"]["continued"] == pytest.approx(0.9)
    assert changed["metrics"]["rouge_l"]["delta"] == pytest.approx(0.7) and changed["metrics"]["rouge_l"]["n"] == 2
    assert (unchanged["n"], unchanged["metrics"]["rouge_l"]["delta"]) == (1, pytest.approx(0.0))
    assert "base" not in changed["metrics"]["rouge_l"]
