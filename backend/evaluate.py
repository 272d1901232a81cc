"""Evaluation: compare a base model with its tuned adapter on held-out samples, with error bars.

Everything here is a pure function of texts and numbers (no model, no Ray, no store), so the stage
that generates outputs can change without touching how they are scored, and every score is
reproducible from what was stored.

- Per-output metrics: `rouge_l`, `bleu`, `chrf`, `exact_match`, `syntax_valid`, all on 0..1, bundled
  by `score_output`. They compare a model's answer with a sample's reference answer.
- Base vs tuned: `paired_bootstrap` (mean paired difference with a percentile CI), `aggregate` (that,
  per metric, over rows of per-sample scores) and `flips` (which samples got better or worse).
  Pairing matters: the two models answer the same prompts, so the per-sample difference removes
  most of the prompt-to-prompt variance that two independent means would carry.
- LLM-judge comparisons: `combine_pairwise` turns two judgements with swapped positions into one
  outcome, `win_rate` summarizes the outcomes.
- `degenerate_kind` / `degenerate_summary`: empty, non-text and looping outputs, counted per side, so a page
  can say when a metric compares noise.
- `load_retention_set`: general Python prompts unrelated to any tuned repository, to check that
  tuning on one library did not cost the model its general coding ability.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from backend.config import REPO_ROOT
from backend.sandbox import extract_python_blocks, python_syntax_errors

METRICS = ("rouge_l", "bleu", "chrf", "exact_match", "syntax_valid")
"""Keys of `score_output` without a repository index, in order."""
REPOSITORY_METRICS = ("api_recall", "api_hallucination", "fact_accuracy")
"""Keys `score_output` adds when given the repository's index (and, for `fact_accuracy`, a probe's fact)."""
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "api_hallucination"})
"""Metrics where a smaller value is the better one (`aggregate` and `flips` look them up here)."""
RETENTION_SET = REPO_ROOT / "data" / "retention" / "general_coding.jsonl"

# Words and single punctuation marks: code answers differ in `foo(x)` vs `foo( x )`, which a plain
# whitespace split would count as different tokens.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# One metric object each: sacrebleu's sentence_* helpers build a new one per call. BLEU's effective
# order plus exponential smoothing (Chen & Cherry) keep a short sentence that misses every 4-gram from
# scoring 0 outright, which is what sentence-level BLEU needs.
_BLEU = BLEU(effective_order=True, smooth_method="exp")
_CHRF = CHRF()
# Above this many cells, bootstrap resamples are drawn in blocks so memory stays bounded.
_BOOTSTRAP_BLOCK_CELLS = 2_000_000


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _lcs_length(a: list[str], b: list[str]) -> int:
    # classic O(len(a)*len(b)) dynamic programme, one row at a time
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (beta 1) of `pred` against `ref`, over lowercased word and punctuation tokens.

    Two empty texts score 1.0; one empty text scores 0.0.
    """
    p, r = _tokens(pred), _tokens(ref)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    lcs = _lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(pred: str, ref: str) -> float:
    """Sentence BLEU (sacrebleu, effective order, exponential smoothing) divided by 100: 0..1."""
    if not pred.strip() and not ref.strip():
        return 1.0
    return _BLEU.sentence_score(pred, [ref]).score / 100


def chrf(pred: str, ref: str) -> float:
    """Sentence chrF (sacrebleu defaults: character 6-grams, beta 2) divided by 100: 0..1."""
    if not pred.strip() and not ref.strip():
        return 1.0
    return _CHRF.sentence_score(pred, [ref]).score / 100


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the texts are equal after stripping and collapsing runs of whitespace, else 0.0."""
    return 1.0 if _normalize_ws(pred) == _normalize_ws(ref) else 0.0


def syntax_valid(pred: str) -> float | None:
    """None when `pred` holds no Python code block; 1.0 when every block parses; else 0.0.

    None rather than 1.0 for prose answers, so a model that stops writing code does not look better.
    """
    if not extract_python_blocks(pred):
        return None
    return 0.0 if python_syntax_errors(pred) else 1.0


def api_recall(pred: str, ref: str, index, prompt: str = "") -> float | None:
    """Of the repository's names in the reference answer (`RepoIndex.mentions`) that the prompt does not
    already give away, the share the output names too; None when there is no such name. (Repeating a name the
    question contains shows no knowledge: a base model that echoes `RateCard.quote` back would score on it.)"""
    wanted = index.mentions(ref) - index.mentions(prompt)
    if not wanted:
        return None
    return len(wanted & index.mentions(pred)) / len(wanted)


def api_hallucination(pred: str, index) -> float | None:
    """Of the names in the output that present themselves as the repository's (`RepoIndex.claims`: qualified
    by its package, or imported from it), the share that name nothing it has; None when it claims none."""
    claims = index.claims(pred)
    if not claims:
        return None
    return len(index.unknown(claims)) / len(claims)


def _fact_text(text: str) -> str:
    """Lower case, code marks and quotes dropped, whitespace collapsed: `"EUR"` and `EUR` state the same fact."""
    return " ".join(re.sub(r"[`'\"“”]", "", text.lower()).split())


def fact_accuracy(pred: str, fact: str | None) -> float | None:
    """1.0 when the output states the probe's fact as a whole (`4` is not stated by `TM-4002` or `40`), else
    0.0; None for a sample without a fact."""
    if not fact or not _fact_text(fact):
        return None
    wanted = re.escape(_fact_text(fact))
    return 1.0 if re.search(rf"(?<![a-z0-9_]){wanted}(?![a-z0-9_])", _fact_text(pred)) else 0.0


def score_output(pred: str, ref: str, *, index=None, fact: str | None = None,
                 prompt: str = "") -> dict[str, float | None]:
    """Every per-output metric of `pred` against `ref`, keyed as `METRICS`, plus `REPOSITORY_METRICS` when the
    repository's `index` (a `backend.repo_index.RepoIndex`) is given (`prompt`: the question's text, whose names
    `api_recall` does not count)."""
    scores = {
        "rouge_l": rouge_l(pred, ref),
        "bleu": bleu(pred, ref),
        "chrf": chrf(pred, ref),
        "exact_match": exact_match(pred, ref),
        "syntax_valid": syntax_valid(pred),
    }
    if index is not None:
        scores |= {"api_recall": api_recall(pred, ref, index, prompt),
                   "api_hallucination": api_hallucination(pred, index),
                   "fact_accuracy": fact_accuracy(pred, fact)}
    return scores


def _bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement) of `values`, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    n = len(values)
    block = max(1, _BOOTSTRAP_BLOCK_CELLS // n)
    means = []
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, n, size=(min(block, n_resamples - start), n))
        means.append(values[idx].mean(axis=1))
    return np.concatenate(means)


def _check_bootstrap_args(n_resamples: int, alpha: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be between 0 and 1")


def paired_bootstrap(base: list[float | None], tuned: list[float | None], n_resamples: int = 2000,
                     seed: int = 0, alpha: float = 0.05) -> dict:
    """Mean of base, of tuned and of their paired difference, with a bootstrap CI of the difference.

    `base[i]` and `tuned[i]` are one sample's scores; a pair where either is None (a metric that does
    not apply, such as `syntax_valid` on prose) is skipped. The CI is the percentile interval
    [alpha/2, 1-alpha/2] of the mean of `tuned - base` over resampled pairs.

    Returns:
        {"base", "tuned", "delta", "ci": [low, high], "n"}; with no usable pair every value is None
        and n is 0.
    """
    if len(base) != len(tuned):
        raise ValueError(f"base has {len(base)} scores and tuned {len(tuned)}: they must be paired")
    _check_bootstrap_args(n_resamples, alpha)
    pairs = [(b, t) for b, t in zip(base, tuned) if b is not None and t is not None]
    if not pairs:
        return {"base": None, "tuned": None, "delta": None, "ci": None, "n": 0}
    b = np.array([p[0] for p in pairs], dtype=float)
    t = np.array([p[1] for p in pairs], dtype=float)
    diffs = t - b
    means = _bootstrap_means(diffs, n_resamples, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"base": float(b.mean()), "tuned": float(t.mean()), "delta": float(diffs.mean()),
            "ci": [float(low), float(high)], "n": len(pairs)}


def aggregate(rows: list[dict], metrics: list[str], seed: int = 0, n_resamples: int = 2000,
              alpha: float = 0.05) -> dict[str, dict]:
    """`paired_bootstrap` per metric over rows of per-sample scores.

    Each row is `{"sample_id": ..., "base": {metric: value}, "tuned": {metric: value}}`; a metric
    missing from either side counts as None (skipped). Each result gains `"better"`: "lower" for
    `LOWER_IS_BETTER` metrics, else "higher". Delta stays `tuned - base` for both, so a negative delta
    on loss is an improvement.
    """
    out = {}
    for metric in metrics:
        base = [(row.get("base") or {}).get(metric) for row in rows]
        tuned = [(row.get("tuned") or {}).get(metric) for row in rows]
        result = paired_bootstrap(base, tuned, n_resamples=n_resamples, seed=seed, alpha=alpha)
        result["better"] = "lower" if metric in LOWER_IS_BETTER else "higher"
        out[metric] = result
    return out


def flips(rows: list[dict], metric: str, tolerance: float = 0.05,
          lower_is_better: bool | None = None) -> dict[str, list]:
    """Samples whose `metric` moved by more than `tolerance` between base and tuned.

    Args:
        rows: as for `aggregate`; a row without `sample_id` is named by its index.
        lower_is_better: None: decided by `LOWER_IS_BETTER` (so "loss" needs no flag).

    Returns:
        {"improved": [sample_id, ...], "regressed": [...]}, in row order; rows where either score is
        None are in neither.
    """
    if lower_is_better is None:
        lower_is_better = metric in LOWER_IS_BETTER
    improved, regressed = [], []
    for i, row in enumerate(rows):
        b = (row.get("base") or {}).get(metric)
        t = (row.get("tuned") or {}).get(metric)
        if b is None or t is None:
            continue
        gain = (b - t) if lower_is_better else (t - b)
        sid = row.get("sample_id", i)
        if gain > tolerance:
            improved.append(sid)
        elif gain < -tolerance:
            regressed.append(sid)
    return {"improved": improved, "regressed": regressed}


_AB = {"a": "base", "b": "tuned", "tie": "tie"}
_BA = {"a": "tuned", "b": "base", "tie": "tie"}


def combine_pairwise(verdict_ab: str, verdict_ba: str) -> str:
    """One outcome ("win" | "tie" | "loss", for the tuned model) from two judgements of one sample.

    `verdict_ab` judged A=base, B=tuned; `verdict_ba` judged A=tuned, B=base; each is "A", "B" or
    "tie" (case-insensitive). Only a preference that survives the swap counts: a judge that always
    picks A (position bias) yields "tie", not a win for whichever model happened to be first.
    """
    try:
        first, second = _AB[verdict_ab.strip().lower()], _BA[verdict_ba.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"verdicts must be 'A', 'B' or 'tie', got {verdict_ab!r} and {verdict_ba!r}") from None
    if first == second == "tuned":
        return "win"
    if first == second == "base":
        return "loss"
    return "tie"


_OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def win_rate(outcomes: list[str], n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Counts of "win"/"tie"/"loss", the win rate (a tie counts half) and its bootstrap CI.

    Returns:
        {"win", "tie", "loss", "win_rate", "ci": [low, high]}; with no outcomes the counts are 0 and
        win_rate and ci are None.
    """
    _check_bootstrap_args(n_resamples, alpha)
    unknown = sorted({o for o in outcomes if o not in _OUTCOME_SCORE})
    if unknown:
        raise ValueError(f"outcomes must be 'win', 'tie' or 'loss', got {unknown}")
    counts = {k: sum(1 for o in outcomes if o == k) for k in ("win", "tie", "loss")}
    if not outcomes:
        return {**counts, "win_rate": None, "ci": None}
    scores = np.array([_OUTCOME_SCORE[o] for o in outcomes])
    means = _bootstrap_means(scores, n_resamples, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {**counts, "win_rate": float(scores.mean()), "ci": [float(low), float(high)]}


def load_retention_set(path: Path | str | None = None) -> list[dict]:
    """The general-coding retention prompts (`RETENTION_SET` by default), one dict per JSONL line.

    Each has `id`, `instruction`, `input`, `output` (a reference answer) and `task`. Blank lines are
    skipped; a line that is not a JSON object raises ValueError naming it.
    """
    path = Path(path) if path is not None else RETENTION_SET
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        items.append(item)
    return items


def code_passes(output: str, repo_root, timeout_s: float = 10) -> float:
    """1.0 when the output's Python blocks run cleanly against the repository (sandboxed), else 0.0.

    An output without code, or with only empty blocks, fails: it did not do what a code task asked.
    """
    from pathlib import Path

    from backend.sandbox import extract_python_blocks, run_python

    blocks = [b for b in extract_python_blocks(output) if b.strip()]
    if not blocks:
        return 0.0
    result = run_python("\n\n".join(blocks), repo_root=Path(repo_root), timeout_s=timeout_s)
    return 1.0 if result.status == "pass" else 0.0


def _share(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def uses_real_names(scores: dict) -> bool:
    """An answer names at least one of the repository names its reference names, and invents none."""
    return bool(scores.get("api_recall")) and not scores.get("api_hallucination")


def knowledge_summary(rows: list[dict]) -> dict:
    """What the probe set says in plain numbers, for base and tuned: how many questions, the share of answers
    stating the right fact (of those with a fact), using the repository's real names (`uses_real_names`, of
    those whose reference names any) and inventing a name (of all)."""
    out: dict = {"questions": len(rows), "with_fact": sum(1 for r in rows if r.get("fact"))}
    for side in ("base", "tuned"):
        scores = [r[f"{side}_scores"] or {} for r in rows]
        out[side] = {
            "fact_right": _share([s.get("fact_accuracy") == 1.0 for s in scores if s.get("fact_accuracy") is not None]),
            "real_names": _share([uses_real_names(s) for s in scores if s.get("api_recall") is not None]),
            "invented_names": _share([bool(s.get("api_hallucination")) for s in scores]),
        }
    return out


def wrong_then_right(rows: list[dict], k: int = 3) -> list[dict]:
    """Up to `k` rows where the base answer was wrong and the tuned one right, best first, chosen by score:
    the fact stated (or, without a fact, the repository's names used) by tuned and not by base, then the
    largest ROUGE-L gain."""
    def right(scores: dict, fact: str | None) -> bool:
        return scores.get("fact_accuracy") == 1.0 if fact else uses_real_names(scores)

    picked = [r for r in rows if right(r["tuned_scores"] or {}, r.get("fact"))
              and not right(r["base_scores"] or {}, r.get("fact"))]
    gain = lambda r: ((r["tuned_scores"] or {}).get("rouge_l") or 0) - ((r["base_scores"] or {}).get("rouge_l") or 0)
    return sorted(picked, key=lambda r: (-gain(r), r["sample_id"]))[:k]


DEGENERATE_KINDS = ("empty", "non_text", "repetition")
"""Why an output is degenerate: nothing in it, no words in it (replacement characters, mostly punctuation or
backticks), or a loop (the same few words over and over). A metric computed on such outputs compares noise."""
DEGENERATE_DOMINATES = 0.5
"""A side whose share of degenerate outputs reaches this says nothing about what its model knows."""


def degenerate_kind(text: str | None) -> str | None:
    """Which of `DEGENERATE_KINDS` an output is, or None for an answer in words or code."""
    body = (text or "").strip()
    if not body:
        return "empty"
    visible = [c for c in body if not c.isspace()]
    wordy = sum(c.isalnum() and c != "\ufffd" for c in visible)
    # a random model's bytes decode to U+FFFD; a fenced answer of only backticks has no alphanumerics at all
    if body.count("\ufffd") / len(visible) > 0.1 or wordy / len(visible) < 0.3:
        return "non_text"
    tokens = _tokens(body)
    if len(tokens) >= 12:
        trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
        if len(set(trigrams)) / len(trigrams) < 0.3:  # prose and code repeat far fewer of their trigrams
            return "repetition"
    elif len(visible) >= 20 and len(set(visible)) <= 2:  # one long token of one or two characters: "aaaa…"
        return "repetition"
    return None


def degenerate_summary(rows: list[dict]) -> dict:
    """Per side (`base`, `tuned`), how many of `rows`' outputs are degenerate, by kind: `n`, one count per kind,
    `degenerate` (their sum), `share` (of n) and `dominates` (share ≥ `DEGENERATE_DOMINATES`)."""
    out = {}
    for side in ("base", "tuned"):
        kinds = [degenerate_kind(r.get(f"{side}_output")) for r in rows]
        counts = {k: kinds.count(k) for k in DEGENERATE_KINDS}
        bad = sum(counts.values())
        share = bad / len(rows) if rows else 0.0
        out[side] = {"n": len(rows), **counts, "degenerate": bad, "share": share,
                     "dominates": bool(rows) and share >= DEGENERATE_DOMINATES}
    return out


# ---- a continued adapter against the adapter it continued --------------------------------------------

CHANGE_GROUPS = ("changed", "unchanged")
"""How `compare_by_change` groups prompts: files added or changed between the two adapters' dataset versions (did
it learn the change?), and files whose text stayed the same (did it keep the rest?)."""


def changed_files(old_rows: list[dict], new_rows: list[dict]) -> dict[str, list[str]]:
    """The files of two dataset versions' samples by what happened to their text: `added`, `changed`, `deleted`
    and `unchanged`, each sorted.

    A file's text is known by the chunk ids of its samples (a chunk id hashes the chunk's text), so a file whose
    samples come from the same chunks in both versions is unchanged, whatever curation did to the samples.
    """
    def chunks_by_file(rows: list[dict]) -> dict[str, set]:
        out: dict[str, set] = {}
        for r in rows:
            if r.get("path"):
                out.setdefault(r["path"], set()).add(r.get("chunk_id"))
        return out

    old, new = chunks_by_file(old_rows), chunks_by_file(new_rows)
    both = old.keys() & new.keys()
    return {"added": sorted(new.keys() - old.keys()), "changed": sorted(p for p in both if old[p] != new[p]),
            "deleted": sorted(old.keys() - new.keys()), "unchanged": sorted(p for p in both if old[p] == new[p])}


def change_group(path: str | None, files: dict[str, list[str]]) -> str | None:
    """`changed` for a file added or changed (per `changed_files`), `unchanged` for one unchanged, else None."""
    if path in files["added"] or path in files["changed"]:
        return "changed"
    return "unchanged" if path in files["unchanged"] else None


def compare_by_change(rows: list[dict], files: dict[str, list[str]], metrics: list[str], seed: int = 0) -> dict:
    """The previous adapter against the continued one, per `CHANGE_GROUPS` group and metric.

    Args:
        rows: one per prompt both adapters answered: {"path", "eval_set", "previous": scores, "continued": scores}.
        files: `changed_files` of the previous adapter's dataset version and the continued one's.

    Returns:
        {group: {"n", "sets": {eval_set: n}, "metrics": {metric: {"previous", "continued", "delta", "ci", "n",
        "better"}}}}: `aggregate` with base = previous and tuned = continued, so delta is continued - previous.
    """
    out = {}
    for group in CHANGE_GROUPS:
        members = [r for r in rows if change_group(r.get("path"), files) == group]
        sets: dict[str, int] = {}
        for r in members:
            sets[r["eval_set"]] = sets.get(r["eval_set"], 0) + 1
        stats = aggregate([{"base": r["previous"], "tuned": r["continued"]} for r in members], metrics, seed=seed)
        out[group] = {"n": len(members), "sets": sets, "metrics": {
            m: {"previous": s.pop("base"), "continued": s.pop("tuned"), **s} for m, s in stats.items()}}
    return out
