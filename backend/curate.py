"""Curation: generated samples → a clean, deduplicated dataset split by source file.

A sample is a dict with `sample_id, project, run_id, chunk_id, path, start_line, end_line, task (one of
backend.synth_config.TASKS, or probe), language (one of its LANGUAGES), instruction, input, output, messages
(list of {"role", "content"} or None), generator, template_version, fact`; other keys ride along untouched.

`curate` runs, in this order: validation → judge threshold → execution results → exact dedup →
near dedup (MinHash + LSH over word 5-shingles, each candidate confirmed by exact Jaccard) → split.
Splitting is by source `path`, so no file's samples sit in two splits; dedup runs first, so neither
do duplicates of one text. `leakage` checks both on any split dataset.

Knowledge probes (task `probe`) take no part in deciding the split: once the files are split, a probe of a
file in the train split joins the `probe` split, unless it is a near-duplicate of a training sample (the same
test as dedup) — a probe must ask what training taught in words training never used. Probes of held-out
files are dropped: those files' questions belong to val and test.

Everything is deterministic: samples are processed in `sample_id` order, hashes are seeded
(never Python's per-process `hash()`), and outputs are sorted by `sample_id`.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.curate_config import PROBE_SPLIT, CurateConfig
from backend.sandbox import extract_python_blocks, python_syntax_errors, run_python
from backend.synth_config import PROBE_TASK

SHINGLE_WORDS = 5
"""Words per shingle for near-duplicate detection."""

# exec statuses (from `backend.sandbox`, and "crashed" when the check's own process died) that drop a sample;
# "error" (the sandbox could not run) and "no_code" are not the sample's fault and keep it
EXEC_FAILED = {"fail", "timeout", "memory", "crashed"}


@dataclass
class CurationResult:
    kept: list[dict]
    """Copies of the kept samples, sorted by sample_id, with `split`, `judge_score` and `exec_status` added."""
    dropped: list[tuple[str, str]]
    """(sample_id, reason) once per dropped sample, sorted by sample_id; several validation reasons
    are joined with "; "."""
    stats: dict
    """Counts: input, kept, dropped, by_split, by_task, by_language (kept), dropped_by_reason (each
    reason code once per sample it applies to), exec_failed_by_status (sandbox status → samples dropped as
    exec_failed), exact_duplicates, near_duplicates, duplicate_rate (share of the samples that reached dedup
    dropped as duplicates)."""


# --- text of a sample -----------------------------------------------------------------------------

def _text(value) -> str:
    """A field as a string ('' for None)."""
    return "" if value is None else str(value)


def _turns(sample: dict) -> list[dict] | None:
    """The sample's messages, or None when it has none."""
    messages = sample.get("messages")
    return list(messages) if messages else None


def instruction_of(sample: dict) -> str:
    """The instruction, or a multiturn sample's first user turn when the field is empty."""
    text = _text(sample.get("instruction"))
    if not text.strip() and _turns(sample):
        text = next((_text(m.get("content")) for m in _turns(sample) if m.get("role") == "user"), "")
    return text


def output_of(sample: dict) -> str:
    """The output, or a multiturn sample's last assistant turn when the field is empty."""
    text = _text(sample.get("output"))
    if not text.strip() and _turns(sample):
        text = next((_text(m.get("content")) for m in reversed(_turns(sample)) if m.get("role") == "assistant"), "")
    return text


def join_sample_fields(sample: dict) -> str:
    """Everything a reader of the sample sees, one field a line: instruction, input, output and every message
    (what deduplication and the leakage check compare)."""
    parts = [_text(sample.get("instruction")), _text(sample.get("input")), _text(sample.get("output"))]
    parts += [_text(m.get("content")) for m in _turns(sample) or []]
    return "\n".join(parts)


def normalize(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, stripped."""
    return " ".join(text.lower().split())


# --- validation -----------------------------------------------------------------------------------

def validate_sample(sample: dict, cfg: CurateConfig) -> list[str]:
    """Every reason to drop this sample on its own merits (empty: it is fine)."""
    reasons = []
    instruction, output = instruction_of(sample).strip(), output_of(sample).strip()
    if not instruction:
        reasons.append("empty_instruction")
    elif len(instruction) < cfg.min_instruction_chars:
        reasons.append("instruction_too_short")
    if not output:
        reasons.append("empty_output")
    elif len(output) < cfg.min_output_chars:
        reasons.append("output_too_short")
    elif len(output) > cfg.max_output_chars:
        reasons.append("output_too_long")
    if sample.get("task") == "multiturn" or sample.get("messages"):
        if _messages_problem(sample.get("messages")):
            reasons.append("bad_messages")
    if cfg.require_python_parses:
        errors = python_syntax_errors(answer_text(sample))
        if errors:
            reasons.append("python_syntax_error: " + "; ".join(errors))
    return reasons


def answer_text(sample: dict) -> str:
    """What the model is trained to say: the output, or every assistant turn of a conversation."""
    turns = _turns(sample)
    if turns:
        return "\n\n".join(_text(m.get("content")) for m in turns if m.get("role") == "assistant")
    return _text(sample.get("output"))


def _messages_problem(messages) -> str | None:
    """Why a conversation is unusable, or None: at least a user and an assistant turn, alternating
    (an optional system turn first), ending with the assistant, none empty."""
    if not isinstance(messages, list) or not messages:
        return "no messages"
    turns = list(messages)
    if isinstance(turns[0], dict) and turns[0].get("role") == "system":
        turns = turns[1:]
    if len(turns) < 2:
        return "fewer than 2 turns"
    for i, m in enumerate(turns):
        if not isinstance(m, dict):
            return f"turn {i} is not a dict"
        if m.get("role") != ("user" if i % 2 == 0 else "assistant"):
            return f"turn {i} has role {m.get('role')!r}"
        if not _text(m.get("content")).strip():
            return f"turn {i} is empty"
    if len(turns) % 2:
        return "ends with a user turn"
    return None


# --- duplicates -----------------------------------------------------------------------------------

def exact_duplicates(samples: list[dict], order=None) -> dict[str, str]:
    """dropped sample_id → kept sample_id for samples whose normalized text repeats an earlier one
    (in `order`, by default `dedup_order`)."""
    first: dict[str, str] = {}
    out = {}
    for s in sorted(samples, key=order or dedup_order):
        key = normalize(join_sample_fields(s))
        if key in first:
            out[_sid(s)] = first[key]
        else:
            first[key] = _sid(s)
    return out


def shingles(text: str, k: int = SHINGLE_WORDS) -> set[str]:
    """Word k-shingles of the normalized text; a text under k words is one shingle."""
    words = normalize(text).split()
    if len(words) <= k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class MinHasher:
    """MinHash signatures with seeded universal hashes (a·x + b mod 2^61-1), vectorized with numpy."""

    PRIME = np.uint64((1 << 61) - 1)
    MASK = np.uint64(0xFFFFFFFF)

    def __init__(self, num_perm: int, seed: int):
        rng = np.random.RandomState(seed)
        self.a = rng.randint(1, 1 << 32, size=num_perm, dtype=np.uint64)
        self.b = rng.randint(0, 1 << 32, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, shingle_set: set[str]) -> np.ndarray:
        """The num_perm minimum hashes of a shingle set (all 2^32 for an empty set)."""
        if not shingle_set:
            return np.full(self.num_perm, 1 << 32, dtype=np.uint64)
        # blake2b, not hash(): Python's string hash changes with every process
        hv = np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
                          for s in sorted(shingle_set)), dtype=np.uint64, count=len(shingle_set))
        # uint64 arithmetic wraps on overflow, deterministically; the datasketch library does the same
        with np.errstate(over="ignore"):
            phv = ((self.a[:, None] * hv[None, :] + self.b[:, None]) % self.PRIME) & self.MASK
        return phv.min(axis=1)


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose chance of making a pair at exactly `threshold` a
    candidate is still at least `recall`.

    Favouring recall over the usual balance of false positives and negatives is deliberate: every
    candidate is confirmed by exact Jaccard, so a false candidate costs one set comparison, while a
    miss leaves a duplicate in the dataset. (The balanced choice for 0.85 and 64 permutations,
    6 bands of 10 rows, finds only 73% of pairs at 0.85; 10 bands of 6 rows find 99%.)
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


class LSHIndex:
    """Banded LSH over MinHash signatures: `query` returns the keys sharing at least one band."""

    def __init__(self, threshold: float, num_perm: int):
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self.tables: list[dict[bytes, list[str]]] = [defaultdict(list) for _ in range(self.bands)]

    def _keys(self, sig: np.ndarray):
        """One hashable key per band of a signature."""
        return [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def add(self, key: str, sig: np.ndarray) -> None:
        for table, band in zip(self.tables, self._keys(sig)):
            table[band].append(key)

    def query(self, sig: np.ndarray) -> set[str]:
        out: set[str] = set()
        for table, band in zip(self.tables, self._keys(sig)):
            out.update(table.get(band, ()))
        return out


def near_duplicates(samples: list[dict], threshold: float = 0.85, num_perm: int = 64, seed: int = 13,
                    order=None) -> dict[str, str]:
    """dropped sample_id → kept sample_id for samples whose shingle Jaccard with an earlier kept one
    (in `order`, by default `dedup_order`) is at least `threshold`.

    Only kept samples are indexed, so a chain A~B~C with A and C far apart keeps C; when several kept
    samples match, the earliest sample_id is named.
    """
    hasher, index = MinHasher(num_perm, seed), LSHIndex(threshold, num_perm)
    kept_shingles: dict[str, set[str]] = {}
    out = {}
    for s in sorted(samples, key=order or dedup_order):
        sid, sh = _sid(s), shingles(join_sample_fields(s))
        sig = hasher.signature(sh)
        matches = sorted(k for k in index.query(sig) if jaccard(sh, kept_shingles[k]) >= threshold)
        if matches:
            out[sid] = matches[0]
        else:
            kept_shingles[sid] = sh
            index.add(sid, sig)
    return out


# --- splits ---------------------------------------------------------------------------------------

def dedup_order(sample: dict) -> tuple:
    """Which of a set of duplicates survives: the first by source position and content. Not by id: ids
    carry the run, and the same samples from two runs (a resumed one and an uninterrupted one) must
    curate to the same dataset."""
    return (_text(sample.get("path")), sample.get("start_line") or 0, _text(sample.get("task")),
            normalize(join_sample_fields(sample)), _sid(sample))


def _sid(sample: dict) -> str:
    """The sample's id as a string (the sort key everywhere)."""
    return str(sample["sample_id"])


def _source(sample: dict) -> str:
    """The unit that never straddles splits: the source path (a path-less sample is its own unit)."""
    path = sample.get("path")
    return str(path) if path else f"<no path>:{_sid(sample)}"


def split_by_source(samples: list[dict], splits: dict[str, float], seed: int = 13) -> dict[str, str]:
    """sample_id → split, assigning whole source files so no path sits in two splits.

    Files are taken in a seeded hash order; each goes to the split furthest below its target share
    of samples. Then every split with a non-zero fraction that got no file, when there are at least
    as many files as such splits, takes the smallest file of the split holding the most files.

    Raises:
        ValueError: `splits` is empty or its fractions do not sum to 1.
    """
    if not splits or not math.isclose(sum(splits.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions {splits} must be non-empty and sum to 1")
    sizes: Counter[str] = Counter(_source(s) for s in samples)
    order = sorted(sizes, key=lambda p: (hashlib.sha256(f"{seed}\0{p}".encode()).hexdigest(), p))
    total = sum(sizes.values())
    counts = {name: 0 for name in splits}
    files: dict[str, list[str]] = {name: [] for name in splits}
    for path in order:
        # ties go to the split named first (train, usually)
        name = max(splits, key=lambda n: splits[n] * total - counts[n])
        counts[name] += sizes[path]
        files[name].append(path)
    wanted = [n for n in splits if splits[n] > 0]
    if len(order) >= len(wanted):
        for name in wanted:
            if files[name]:
                continue
            donor = max((n for n in splits if len(files[n]) > 1), key=lambda n: (len(files[n]), counts[n]))
            smallest = min(files[donor], key=lambda p: (sizes[p], p))
            files[donor].remove(smallest)
            counts[donor] -= sizes[smallest]
            files[name].append(smallest)
            counts[name] += sizes[smallest]
    where = {path: name for name, paths in files.items() for path in paths}
    return {_sid(s): where[_source(s)] for s in samples}


def leakage(samples: list[dict], threshold: float = 0.85, num_perm: int = 64, seed: int = 13) -> list[str]:
    """Every way a split dataset leaks between splits: a path, an exact text or a near-duplicate text
    (shingle Jaccard >= threshold) found in two splits. Empty: no leak.

    Probes ask about train files by design, so for paths `probe` counts as `train`; a probe's text must still
    not repeat a training sample's."""
    problems = []
    by_path: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.get("path"):
            by_path[str(s["path"])].add("train" if s["split"] == PROBE_SPLIT else s["split"])
    problems += [f"path {p} is in splits {', '.join(sorted(sp))}" for p, sp in sorted(by_path.items()) if len(sp) > 1]

    ordered = sorted(samples, key=_sid)
    by_text: dict[str, dict] = {}
    exact_pairs = set()
    for s in ordered:
        key = normalize(join_sample_fields(s))
        first = by_text.setdefault(key, s)
        if first is not s and first["split"] != s["split"]:
            exact_pairs.add((_sid(first), _sid(s)))
            problems.append(f"exact duplicate text: {_sid(first)} ({first['split']}) and {_sid(s)} ({s['split']})")

    hasher, index = MinHasher(num_perm, seed), LSHIndex(threshold, num_perm)
    seen: dict[str, tuple[set[str], str]] = {}
    for s in ordered:
        sid, sh = _sid(s), shingles(join_sample_fields(s))
        sig = hasher.signature(sh)
        for other in sorted(index.query(sig)):
            other_sh, other_split = seen[other]
            if other_split != s["split"] and (other, sid) not in exact_pairs:
                score = jaccard(sh, other_sh)
                if score >= threshold:
                    problems.append(f"near-duplicate text (jaccard {score:.2f}): {other} ({other_split}) "
                                    f"and {sid} ({s['split']})")
        seen[sid] = (sh, s["split"])
        index.add(sid, sig)
    return problems


# --- execution ------------------------------------------------------------------------------------

def exec_check(samples: list[dict], repo_root: Path | None, timeout_s: float = 10,
               memory_mb: int = 512) -> dict[str, str]:
    """sample_id → sandbox status of running the sample's answer's Python blocks, joined in order, as
    one program; "no_code" when it has none. Feed the result to `curate(exec_results=...)`."""
    out = {}
    for s in sorted(samples, key=_sid):
        blocks = extract_python_blocks(answer_text(s))
        if not blocks:
            out[_sid(s)] = "no_code"
            continue
        out[_sid(s)] = run_python("\n\n".join(blocks), repo_root=repo_root, timeout_s=timeout_s,
                                  memory_mb=memory_mb).status
    return out


# --- the whole pass -------------------------------------------------------------------------------

def curate(samples: list[dict], cfg: CurateConfig, judge_scores: dict[str, float] | None = None,
           exec_results: dict[str, str] | None = None, settled: dict[str, str] | None = None,
           placed: dict[str, str] | None = None) -> CurationResult:
    """Validate, filter, deduplicate and split samples.

    Args:
        samples: sample dicts (see the module docstring); they are not modified.
        cfg: the curation settings.
        judge_scores: sample_id → LLM-judge score (1-10). Used to drop only when
            `cfg.judge_threshold` is set; recorded as `judge_score` on every kept sample either way.
        exec_results: sample_id → sandbox status (from `exec_check`). fail, timeout, memory and crashed drop
            the sample as `exec_failed: <status>`; other statuses and missing ids keep it.
        settled: sample_id → split of the samples already in the version the others join (new samples added
            onto a dataset version): they win every duplicate, keep their split, and a new sample of one of
            their files goes to that file's split, so adding samples never reshuffles the version.
        placed: source path -> split of files an earlier version placed (a refresh: also those whose samples were
            all retired): their new samples go there, so a file never changes split across versions.

    Raises:
        ConfigError: cfg has problems.
        ValueError: a sample has no sample_id, or two samples share one.
    """
    cfg.validate()
    settled = settled or {}
    judge_scores = judge_scores or {}
    exec_results = exec_results or {}
    ids = [s.get("sample_id") for s in samples]
    if any(i is None or i == "" for i in ids):
        raise ValueError("every sample needs a sample_id")
    repeated = sorted(str(i) for i, n in Counter(map(str, ids)).items() if n > 1)
    if repeated:
        raise ValueError(f"sample_id repeated: {', '.join(repeated[:10])}")

    dropped: dict[str, str] = {}
    reason_counts: Counter[str] = Counter()

    def drop(sid: str, reasons: list[str]) -> None:
        dropped[sid] = "; ".join(reasons)
        reason_counts.update(r.split(":")[0] for r in reasons)

    alive = []
    for s in sorted(samples, key=_sid):
        sid = _sid(s)
        reasons = validate_sample(s, cfg)
        if reasons:
            drop(sid, reasons)
        elif cfg.judge_threshold is not None and judge_scores.get(sid) is not None \
                and judge_scores[sid] < cfg.judge_threshold:
            drop(sid, ["judge_below_threshold"])
        elif exec_results.get(sid) in EXEC_FAILED:
            drop(sid, [f"exec_failed: {exec_results[sid]}"])
        else:
            alive.append(s)

    probes = [s for s in alive if s.get("task") == PROBE_TASK]
    alive = [s for s in alive if s.get("task") != PROBE_TASK]
    reached_dedup = len(alive)
    exact, near = _dedup(alive, cfg, drop, order=lambda s: (_sid(s) not in settled, *dedup_order(s)))
    alive = [s for s in alive if _sid(s) not in exact and _sid(s) not in near]

    assignment = split_by_source(alive, cfg.splits, cfg.seed)
    if settled or placed:
        split_of_path = dict(placed or {}) | {_source(s): settled[_sid(s)] for s in alive
                                              if settled.get(_sid(s), PROBE_SPLIT) != PROBE_SPLIT}
        assignment = {_sid(s): split_of_path.get(_source(s), assignment[_sid(s)]) for s in alive}
    assignment.update(_assign_probes(probes, alive, assignment, cfg, drop))
    kept = []
    for s in alive + probes:
        sid = _sid(s)
        if sid not in assignment:
            continue
        row = dict(s, split=assignment[sid], judge_score=judge_scores.get(sid), exec_status=exec_results.get(sid))
        kept.append(row)
    kept.sort(key=_sid)

    stats = {
        "input": len(samples),
        "kept": len(kept),
        "dropped": len(dropped),
        "by_split": {name: sum(1 for r in kept if r["split"] == name)
                     for name in [*cfg.splits, *([PROBE_SPLIT] if probes else [])]},
        "by_task": dict(sorted(Counter(_text(r.get("task")) for r in kept).items())),
        "by_language": dict(sorted(Counter(_text(r.get("language")) for r in kept).items())),
        "dropped_by_reason": dict(sorted(reason_counts.items())),
        "exec_failed_by_status": dict(sorted(Counter(r.split(": ", 1)[1] for r in dropped.values()
                                                     if r.startswith("exec_failed: ")).items())),
        "exact_duplicates": len(exact),
        "near_duplicates": len(near),
        "duplicate_rate": (len(exact) + len(near)) / reached_dedup if reached_dedup else 0.0,
    }
    return CurationResult(kept=kept, dropped=sorted(dropped.items()), stats=stats)


def _dedup(samples: list[dict], cfg: CurateConfig, drop, order=None) -> tuple[dict[str, str], dict[str, str]]:
    """Exact, then near duplicates among `samples` (the first in `order` kept), each dropped naming the sample it
    repeats."""
    exact = exact_duplicates(samples, order)
    for sid, kept_id in exact.items():
        drop(sid, [f"exact_duplicate_of:{kept_id}"])
    near = near_duplicates([s for s in samples if _sid(s) not in exact], cfg.near_dup_threshold, cfg.num_perm,
                           cfg.seed, order)
    for sid, kept_id in near.items():
        drop(sid, [f"near_duplicate_of:{kept_id}"])
    return exact, near


def _assign_probes(probes: list[dict], samples: list[dict], assignment: dict[str, str], cfg: CurateConfig,
                   drop) -> dict[str, str]:
    """sample_id → `probe` for the probes that ask about a train file in words no training sample uses."""
    if not probes:
        return {}
    exact, near = _dedup(probes, cfg, drop)
    split_of_path = {_source(s): assignment[_sid(s)] for s in samples}
    train = [s for s in samples if assignment[_sid(s)] == "train"]
    hasher, index = MinHasher(cfg.num_perm, cfg.seed), LSHIndex(cfg.near_dup_threshold, cfg.num_perm)
    train_shingles = {}
    for s in train:
        sh = shingles(join_sample_fields(s))
        train_shingles[_sid(s)] = sh
        index.add(_sid(s), hasher.signature(sh))
    train_texts = {normalize(join_sample_fields(s)): _sid(s) for s in train}
    out = {}
    for p in sorted(probes, key=_sid):
        sid = _sid(p)
        if sid in exact or sid in near:
            continue
        split = split_of_path.get(_source(p))
        if split is None:
            drop(sid, ["probe_without_training_file"])
            continue
        if split != "train":
            drop(sid, [f"probe_of_held_out_file:{split}"])
            continue
        text = normalize(join_sample_fields(p))
        sh = shingles(join_sample_fields(p))
        twins = sorted(k for k in index.query(hasher.signature(sh)) if jaccard(sh, train_shingles[k]) >= cfg.near_dup_threshold)
        if text in train_texts or twins:
            drop(sid, [f"probe_near_training:{train_texts.get(text) or twins[0]}"])
            continue
        out[sid] = PROBE_SPLIT
    return out
