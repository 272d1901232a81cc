import random
import zlib

import pytest

from backend.config import SAMPLE_REPO
from backend.config_base import ConfigError
from backend.curate import (curate, exact_duplicates, exec_check, jaccard, leakage, lsh_params, near_duplicates,
                            shingles, split_by_source, validate_sample)
from backend.curate_config import CurateConfig

WORDS = ("berth window manifest carrier ledger yard slot dock door customs hold rate card lane quote "
         "container seal retry policy event audit freight terminal shipment booking schedule").split()


def prose(seed: int, n: int = 60) -> str:
    """n pseudo-random words, different for every seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 9)) for _ in range(n))


def sample(sid: str, **over) -> dict:
    base = dict(sample_id=sid, project="tidemark", run_id="run-1", chunk_id=f"chunk-{sid}",
                path=f"docs/{sid}.md", start_line=1, end_line=20, task="qa", language="en",
                instruction=f"How does feature {sid} of tidemark work?", input="",
                output=f"Feature {sid} works like this: " + prose(zlib.crc32(sid.encode()), 30),
                messages=None, generator="deepseek-chat", template_version="qa-v1")
    base.update(over)
    return base


CFG = CurateConfig()


# --- config ---------------------------------------------------------------------------------------

def test_default_config_is_valid():
    assert CurateConfig().problems() == []
    assert CurateConfig().validate() is not None


def test_config_lists_every_problem():
    cfg = CurateConfig(min_instruction_chars=-1, min_output_chars=-2, max_output_chars=0, judge_threshold=11,
                       near_dup_threshold=0, num_perm=4, splits={"train": 0.7, "bad name": 0.1, "test": 1.5},
                       exec_timeout_s=0)
    problems = cfg.problems()
    joined = "\n".join(problems)
    for needle in ("min_instruction_chars", "min_output_chars", "max_output_chars", "judge_threshold",
                   "near_dup_threshold", "num_perm", "'bad name'", "splits['test']=1.5", "sum to", "exec_timeout_s"):
        assert needle in joined, needle
    assert len(problems) == 10
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.problems == problems
    assert CurateConfig(splits={}).problems() == [
        'curate.splits is empty; use e.g. {"train": 0.8, "val": 0.1, "test": 0.1}']


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("over, reason", [
    (dict(instruction="  "), "empty_instruction"),
    (dict(output=""), "empty_output"),
    (dict(instruction="Why?"), "instruction_too_short"),
    (dict(output="Short answer."), "output_too_short"),
    (dict(output="x" * 8001), "output_too_long"),
])
def test_validation_reasons(over, reason):
    assert validate_sample(sample("a", **over), CFG) == [reason]


def test_python_syntax_error_is_a_reason_with_detail():
    bad = sample("a", task="codegen", output="Use this:\n\n```python\ndef quote(:\n    return 1\n```\n")
    assert validate_sample(bad, CFG) == ["python_syntax_error: block 1 line 1: invalid syntax"]
    assert validate_sample(bad, CurateConfig(require_python_parses=False)) == []
    good = sample("b", task="codegen", output="Use this:\n\n```python\ndef quote():\n    return 1\n```\n")
    assert validate_sample(good, CFG) == []


def test_several_reasons_at_once():
    assert validate_sample(sample("a", instruction="", output="tiny"), CFG) == ["empty_instruction", "output_too_short"]


def _multi(messages, **over):
    return sample("m", task="multiturn", instruction="", output="", messages=messages, **over)


LONG = "A long enough answer about the berth window rule."


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "How do I book a dock door?"}],
    [{"role": "user", "content": "How do I book a dock door?"}, {"role": "user", "content": "Hello?"}],
    [{"role": "assistant", "content": LONG}, {"role": "user", "content": "How do I book a dock door?"}],
    [{"role": "user", "content": "How do I book a dock door?"}, {"role": "assistant", "content": "  "}],
    [{"role": "user", "content": "How do I book a dock door?"}, {"role": "assistant", "content": LONG},
     {"role": "user", "content": "And then?"}],
])
def test_bad_messages(messages):
    assert "bad_messages" in validate_sample(_multi(messages), CFG)


def test_good_multiturn_uses_its_turns_for_instruction_and_output():
    messages = [{"role": "system", "content": "You know tidemark."},
                {"role": "user", "content": "How do I book a dock door?"}, {"role": "assistant", "content": LONG},
                {"role": "user", "content": "And cancel it?"},
                {"role": "assistant",
                 "content": "Call `schedule.cancel(booking)`:\n\n```python\nschedule.cancel(b)\n```"}]
    assert validate_sample(_multi(messages), CFG) == []
    # a syntax error in any assistant turn counts
    messages[2] = {"role": "assistant", "content": "```python\nif x\n```\n" + LONG}
    assert validate_sample(_multi(messages), CFG)[0].startswith("python_syntax_error: block 1 line 1")


# --- duplicates -----------------------------------------------------------------------------------

def test_exact_duplicates_ignore_case_and_whitespace():
    a = sample("a", output="The Berth window   opens at six.\nIt closes at noon.")
    b = sample("b", output="the berth window opens at six. it closes at noon.")
    c = sample("c", output="The berth window opens at seven.")
    # the kept one is the first by sample_id, whatever the input order
    assert exact_duplicates([b, c, a]) == {}  # instructions differ: not duplicates
    b["instruction"] = a["instruction"].upper()
    assert exact_duplicates([b, c, a]) == {"b": "a"}


def one_word_changed(text: str, at: int) -> str:
    words = text.split()
    words[at] = "REPLACED"
    return " ".join(words)


def test_near_duplicates_catch_a_one_word_change():
    text = prose(1, 60)
    base = dict(instruction="Explain the berth window rule of the tidemark dock scheduler.")
    a = sample("a", output=text, **base)
    b = sample("b", output=one_word_changed(text, 30), **base)        # mid-text: 5 shingles differ
    c = sample("c", output=one_word_changed(text, 59), **base)        # last word: 1 shingle differs
    d = sample("d", output=prose(2, 60), **base)                      # a different text
    assert near_duplicates([d, c, b, a]) == {"b": "a", "c": "a"}


def test_near_duplicate_threshold_is_exact_jaccard():
    # a 60-word text alone: one mid-text change leaves 51 of 61 shingles shared (0.836)
    text = prose(3, 60)
    a, b = sample("a", instruction="", output=text), sample("b", instruction="", output=one_word_changed(text, 30))
    j = jaccard(shingles(text), shingles(one_word_changed(text, 30)))
    assert j == pytest.approx(51 / 61)
    assert near_duplicates([a, b], threshold=0.85) == {}
    assert near_duplicates([a, b], threshold=0.8) == {"b": "a"}


def test_near_duplicates_find_many_pairs_and_no_false_ones():
    base = [sample(f"s{i:03d}", output=prose(100 + i, 80)) for i in range(60)]
    copies = [sample(f"t{i:03d}", instruction=base[i]["instruction"], output=one_word_changed(base[i]["output"], 40))
              for i in range(60)]
    found = near_duplicates(base + copies)
    assert found == {f"t{i:03d}": f"s{i:03d}" for i in range(60)}


def test_lsh_parameters_favour_recall():
    bands, rows = lsh_params(0.85, 64)
    assert bands * rows <= 64
    assert 1 - (1 - 0.85 ** rows) ** bands >= 0.99


# --- splits ---------------------------------------------------------------------------------------

def corpus(n_files: int = 50) -> list[dict]:
    rng = random.Random(5)
    out = []
    for f in range(n_files):
        for k in range(rng.randint(1, 8)):
            out.append(sample(f"f{f:02d}-{k}", path=f"docs/page{f:02d}.md", output=prose(f * 100 + k)))
    return out


def test_split_is_deterministic_and_by_source():
    samples = corpus()
    splits = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = split_by_source(samples, splits, seed=13)
    assert first == split_by_source(list(reversed(samples)), splits, seed=13)
    assert first != split_by_source(samples, splits, seed=14)
    by_path = {}
    for s in samples:
        by_path.setdefault(s["path"], set()).add(first[s["sample_id"]])
    assert all(len(v) == 1 for v in by_path.values())


def test_split_sizes_approximate_the_fractions():
    samples = corpus()
    for seed in range(5):
        where = split_by_source(samples, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=seed)
        n = len(samples)
        for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            share = sum(1 for v in where.values() if v == name) / n
            assert abs(share - frac) < 0.05, (seed, name, share)


def test_every_split_gets_a_file_when_there_are_enough():
    # one big file and three single-sample ones: by share alone, train would take them all
    # whenever the small ones come first in the seeded order
    samples = [sample(f"big-{i}", path="big.md") for i in range(100)]
    samples += [sample(f"s{i}", path=f"small{i}.md") for i in range(3)]
    for seed in range(10):
        where = split_by_source(samples, {"train": 0.98, "val": 0.01, "test": 0.01}, seed=seed)
        assert set(where.values()) == {"train", "val", "test"}
        assert where["big-0"] == "train" and len({where[f"big-{i}"] for i in range(100)}) == 1
    # fewer files than splits: no promise, but no path is split either
    where = split_by_source(samples[:3], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert set(where.values()) == {"train"}
    # a zero fraction never gets a file
    where = split_by_source(corpus(10), {"train": 0.9, "val": 0.1, "test": 0.0}, seed=1)
    assert "test" not in where.values()
    with pytest.raises(ValueError):
        split_by_source(samples, {"train": 0.5}, seed=1)


def test_leakage_finds_planted_leaks():
    samples = corpus(20)
    where = split_by_source(samples, CFG.splits, seed=13)
    rows = [dict(s, split=where[s["sample_id"]]) for s in samples]
    assert leakage(rows) == []
    train = next(r for r in rows if r["split"] == "train")
    test = next(r for r in rows if r["split"] == "test")
    path_leak = dict(train, sample_id="leak-path", split="test", output=prose(999))
    exact_leak = dict(train, sample_id="leak-exact", path="docs/other.md", split="test")
    near_leak = dict(test, sample_id="leak-near", path="docs/third.md", split="val",
                     output=one_word_changed(test["output"], -1))
    problems = leakage(rows + [path_leak, exact_leak, near_leak])
    assert any(p.startswith(f"path {train['path']} is in splits") for p in problems)
    assert any(p.startswith("exact duplicate text") and "leak-exact (test)" in p for p in problems)
    assert any(p.startswith("near-duplicate text") and "leak-near (val)" in p for p in problems)
    assert len(problems) == 3


# --- the whole pass -------------------------------------------------------------------------------

def test_curate_end_to_end():
    samples = corpus(30)
    n = len(samples)
    text = samples[0]["output"]
    samples += [
        sample("bad-1", instruction=""),
        sample("bad-2", output="```python\nif x\n```\nThis code is broken on purpose, see."),
        sample("judge-low", output=prose(77)),
        sample("exec-bad", output=prose(78)),
        sample("exec-error", output=prose(79)),
        dict(samples[0], sample_id="zz-exact", path="docs/zz-copy.md"),  # sorts after the original
        dict(samples[0], sample_id="zz-near", path="docs/zz-near.md", output=one_word_changed(text, -1)),
    ]
    result = curate(samples, CFG, judge_scores={"judge-low": 3.0, samples[1]["sample_id"]: 9.0},
                    exec_results={"exec-bad": "timeout", "exec-error": "error"})
    dropped = dict(result.dropped)
    assert dropped == {
        "bad-1": "empty_instruction",
        "bad-2": "python_syntax_error: block 1 line 1: expected ':'",
        "exec-bad": "exec_failed: timeout",
        "zz-exact": f"exact_duplicate_of:{samples[0]['sample_id']}",
        "zz-near": f"near_duplicate_of:{samples[0]['sample_id']}",
    }
    # no threshold set: the low score is recorded, not used
    assert "judge-low" in {r["sample_id"] for r in result.kept}
    assert len(result.kept) + len(result.dropped) == len(samples)
    kept = {r["sample_id"]: r for r in result.kept}
    assert kept[samples[1]["sample_id"]]["judge_score"] == 9.0
    assert kept["exec-error"]["exec_status"] == "error" and kept["judge-low"]["exec_status"] is None
    assert [r["sample_id"] for r in result.kept] == sorted(kept)
    assert all(r["split"] in CFG.splits for r in result.kept)
    assert leakage(result.kept) == []
    stats = result.stats
    assert stats["input"] == n + 7 and stats["kept"] == n + 2 and stats["dropped"] == 5
    assert sum(stats["by_split"].values()) == stats["kept"]
    assert stats["dropped_by_reason"] == {"empty_instruction": 1, "python_syntax_error": 1, "exec_failed": 1,
                                          "exact_duplicate_of": 1, "near_duplicate_of": 1}
    assert stats["by_task"] == {"qa": n + 2}
    assert stats["exec_failed_by_status"] == {"timeout": 1}
    assert stats["duplicate_rate"] == pytest.approx(2 / (n + 4))
    # extra keys survive; the input is untouched
    assert "split" not in samples[0]

    strict = curate(samples, CurateConfig(judge_threshold=5), judge_scores={"judge-low": 3.0})
    assert dict(strict.dropped)["judge-low"] == "judge_below_threshold"
    # deterministic, whatever the input order
    again = curate(list(reversed(samples)), CFG, judge_scores={"judge-low": 3.0, samples[1]["sample_id"]: 9.0},
                   exec_results={"exec-bad": "timeout", "exec-error": "error"})
    assert again.kept == result.kept and again.dropped == result.dropped and again.stats == result.stats


def test_curate_keeps_extra_keys_and_rejects_bad_input():
    result = curate([sample("a", extra={"k": 1})], CFG)
    assert result.kept[0]["extra"] == {"k": 1}
    with pytest.raises(ValueError, match="repeated"):
        curate([sample("a"), sample("a")], CFG)
    with pytest.raises(ConfigError):
        curate([sample("a")], CurateConfig(num_perm=1))


def test_exec_check_runs_answers_in_the_sandbox():
    samples = [
        sample("ok", task="codegen", output="```python\nimport tidemark\nprint(tidemark.__version__)\n```"),
        sample("boom", task="codegen", output="```python\nfrom tidemark import no_such_name\n```"),
        sample("prose", task="qa"),
    ]
    statuses = exec_check(samples, repo_root=SAMPLE_REPO, timeout_s=10)
    assert statuses == {"ok": "pass", "boom": "fail", "prose": "no_code"}


def test_samples_added_onto_a_version_never_reshuffle_it():
    """New samples curated together with a version's (`settled`): the old keep their splits and win duplicates;
    a new sample of an old file goes to that file's split."""
    old = corpus(30)
    first = curate(old, CFG)
    settled = {r["sample_id"]: r["split"] for r in first.kept}
    twin = dict(old[0], sample_id="aaa-new-twin", path="docs/aaa.md", start_line=0)  # first in dedup order
    same_file = sample("zz-new", path=old[5]["path"], output=prose(999))
    fresh = [sample(f"new-{i}", path=f"docs/new{i:02d}.md", output=prose(5000 + i)) for i in range(40)]
    assert curate(old + [twin], CFG).stats["kept"] == len(first.kept)  # alone it would replace old[0]...
    assert "aaa-new-twin" in {r["sample_id"] for r in curate(old + [twin], CFG).kept}
    again = curate(old + [twin, same_file] + fresh, CFG, settled=settled)
    kept = {r["sample_id"]: r["split"] for r in again.kept}
    assert {sid: kept.get(sid) for sid in settled} == settled  # ...added onto the version, it cannot
    assert "aaa-new-twin" not in kept and kept["zz-new"] == settled[old[5]["sample_id"]]
    assert {kept[f"new-{i}"] for i in range(40)} > {"train"}  # new files are split as usual
