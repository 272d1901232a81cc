"""A store seeded with every kind of row the dashboard shows, at any scale (tests, and the 1M-sample benchmark).

Rows are generated inside DuckDB (`range(n)`), so a million samples take seconds. The shapes follow what the
real stages write: a project with files (some skipped) and chunks, a finished synthesis run with its request
log and a dead letter, a curated dataset version, two training runs with curves, and an evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from backend.config import DB_FILENAME
from backend.store import Store

PROJECT = "seeded"
TRAIN_RUNS = ("train-seed-a", "train-seed-b")
EVAL_RUN = "eval-seed-a"
SYNTH_RUN = "synth-seed"
TASKS = ("qa", "codegen", "explain", "completion", "multiturn")


def seed_store(home: Path, samples: int = 400, metric_points: int = 600, files: int = 40) -> dict:
    """Write the rows into `home`'s database (which no other process may hold) and close it."""
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / DB_FILENAME, role="seed")
    q = store.con.execute
    try:
        store.upsert_project(PROJECT, "/src/seeded", "abc123")
        q(f"""INSERT INTO files SELECT '{PROJECT}', 'pkg/mod_' || i || CASE WHEN i % 3 = 0 THEN '.md' ELSE '.py' END,
                CASE WHEN i % 3 = 0 THEN 'markdown' ELSE 'python' END, NULL, 1000 + i, md5(i::VARCHAR), 'abc123',
                CASE WHEN i % 10 = 9 THEN 'skipped' ELSE 'ok' END,
                CASE WHEN i % 10 = 9 THEN 'binary' END, CASE WHEN i % 10 = 9 THEN 'contains NUL bytes' END,
                3, 300, 'c1', now() FROM range({files}) t(i)""")
        q(f"""INSERT INTO chunks SELECT md5('c' || i), '{PROJECT}', 'pkg/mod_' || (i % {files}) || '.py', 'sha', i,
                'code', 'python', ['pkg'], 'fn_' || i, 1, 20, 16 + (i * 37) % 900, 'estimate',
                'def fn_' || i || '(): pass', now() FROM range({files * 3}) t(i)""")
        store.create_run(SYNTH_RUN, "synth", PROJECT, {"generator": "heuristic", "model": "heuristic",
                                                       "fingerprint": "f"})
        q(f"""INSERT INTO api_requests SELECT '{SYNTH_RUN}', md5('c' || i), 'qa', 'k' || i, 1,
                CASE WHEN i % 20 = 0 THEN 'http_429' ELSE 'ok' END, 200, 500, 300, 0.0002, 40.0, NULL, now()
                FROM range(200) t(i)""")
        q(f"""INSERT INTO dead_letters VALUES ('{SYNTH_RUN}', 'k-dead', '{'0' * 32}', 'qa', 'parse_error',
                'the reply was not JSON', 5, false, now())""")
        store.finish_run(SYNTH_RUN, "completed", {"units": 201, "done": 200, "failed": 1, "samples": samples})
        q("""INSERT INTO datasets VALUES (?, 'v1', NULL, [?], '{}', ?, NULL, now(), 'synthesis')""",
          [PROJECT, SYNTH_RUN, json.dumps({"input": samples + samples // 10, "kept": samples,
                                           "exact_duplicates": samples // 20, "near_duplicates": samples // 20,
                                           "duplicate_rate": round(2 * (samples // 20) / (samples + samples // 10), 4)})])
        q(f"""INSERT INTO dataset_samples SELECT '{PROJECT}', 'v1', 's' || lpad(i::VARCHAR, 8, '0'),
                CASE WHEN i % 10 = 0 THEN 'test' WHEN i % 10 = 1 THEN 'val' ELSE 'train' END,
                1 + (i * 7919) % 19 / 2.0, CASE WHEN i % 5 = 0 THEN 'passed' END, '{SYNTH_RUN}', md5('c' || i),
                'pkg/mod_' || (i * 31 % {files}) || '.py', 1, 20,
                ['qa', 'codegen', 'explain', 'completion', 'multiturn'][1 + i % 5], 'en',
                'How do I call fn_' || i || ' in tidemark?', '', 'Call tidemark.fn_' || i || '() with a manifest.',
                CASE WHEN i % 5 = 4 THEN '[{{"role": "user", "content": "How do I call fn_' || i || ' in tidemark?"}}, '
                     || '{{"role": "assistant", "content": "Call tidemark.fn_' || i || '()."}}, '
                     || '{{"role": "user", "content": "With what?"}}, '
                     || '{{"role": "assistant", "content": "Call tidemark.fn_' || i || '() with a manifest."}}]' END,
                'heuristic', 't1', NULL, NULL, NULL, NULL FROM range({samples}) t(i)""")
        points = metric_points // (2 * 6)  # two runs, six curves each
        for n, run_id in enumerate(TRAIN_RUNS):
            lr = 2e-4 * (n + 1)
            store.create_run(run_id, "train", PROJECT, {"dataset": "v1", "preset": "tiny", "train": {
                "training": {"learning_rate": lr, "num_train_epochs": 3}, "lora": {"r": 8 * (n + 1)}}})
            q(f"""INSERT INTO metrics SELECT '{run_id}', s, name, CASE name
                    WHEN 'loss' THEN 3.0 * exp(-s / {points / 3}) + 0.3 + {n} * 0.1
                    WHEN 'learning_rate' THEN {lr} * 0.5 * (1 + cos(pi() * s / {points}))
                    WHEN 'grad_norm' THEN 1.0 + 0.5 * sin(s)
                    WHEN 'epoch' THEN 3.0 * s / {points}
                    WHEN 'num_tokens' THEN s * 4096.0
                    ELSE 900.0 + {n} * 100 END, now()
                  FROM range(1, {points + 1}) t(s),
                       (VALUES ('loss'), ('learning_rate'), ('grad_norm'), ('epoch'), ('num_tokens'),
                               ('rss_mb')) v(name)""")
            q(f"""INSERT INTO metrics SELECT '{run_id}', s, 'eval_loss', 2.5 * exp(-s / {points / 3}) + 0.5, now()
                  FROM range({max(1, points // 10)}, {points + 1}, {max(1, points // 10)}) t(s)""")
            store.finish_run(run_id, "completed", {"global_step": points, "adapter": f"/runs/{run_id}/adapter",
                                                   "tokens_per_second": 1000.0 + n})
        store.create_run(EVAL_RUN, "eval", PROJECT, {"adapter_run": TRAIN_RUNS[0], "dataset": "v1", "split": "test"})
        store.record_eval_results([
            {"run_id": EVAL_RUN, "adapter_run": TRAIN_RUNS[0], "eval_set": eval_set, "sample_id": f"s{i:08d}",
             "task": TASKS[i % 5], "prompt": [{"role": "user", "content": f"How do I call fn_{i}?"}],
             "reference": f"Call tidemark.fn_{i}().", "base_output": f"I do not know fn_{i}.",
             "tuned_output": f"Call tidemark.fn_{i}() with a manifest.",
             "base_scores": {"rouge_l": 0.2, "exact_match": 0.0},
             "tuned_scores": {"rouge_l": 0.2 + (0.3 if i % 3 else -0.1), "exact_match": float(i % 4 == 0)},
             "judge": ("win", "tie", "loss")[i % 3], "judge_detail": {"orders": 2}}
            for eval_set in ("test", "retention") for i in range(12)])
        # knowledge probes: the base invents a name in every other answer; the tuned model states the fact in
        # two answers of three and invents nothing
        store.record_eval_results([
            {"run_id": EVAL_RUN, "adapter_run": TRAIN_RUNS[0], "eval_set": "probe", "sample_id": f"p{i:08d}",
             "task": "probe", "prompt": [{"role": "user", "content": f"Which default does fn_{i} take?"}],
             "reference": f"It takes `F{i}`.", "fact": f"F{i}",
             "base_output": f"Use tidemark.made_up_{i}()." if i % 2 == 0 else "It takes 42.",
             "tuned_output": f"It takes F{i}." if i % 3 else "It takes 7.",
             "base_scores": {"rouge_l": 0.1, "fact_accuracy": 0.0, "api_recall": 0.0,
                             "api_hallucination": 1.0 if i % 2 == 0 else None},
             "tuned_scores": {"rouge_l": 0.8 if i % 3 else 0.3, "fact_accuracy": 1.0 if i % 3 else 0.0,
                              "api_recall": 1.0 if i % 3 else 0.0, "api_hallucination": None},
             "details": {"base": {"mentioned": [], "unknown": [f"tidemark.made_up_{i}"] if i % 2 == 0 else []},
                         "tuned": {"mentioned": [], "unknown": []}},
             "judge": None, "judge_detail": None} for i in range(12)])
        stats = {"n": 12, "metrics": {
            "rouge_l": {"base": 0.2, "tuned": 0.4, "delta": 0.2, "ci": [0.1, 0.3], "n": 12, "better": "higher"},
            "exact_match": {"base": 0.0, "tuned": 0.25, "delta": 0.25, "ci": [0.0, 0.5], "n": 12, "better": "higher"}},
            "flips": {"rouge_l": {"improved": 8, "regressed": 4}}}
        verdicts = {"win": 4, "tie": 4, "loss": 4, "win_rate": 0.5, "ci": [0.3, 0.7]}
        probe_stats = {"n": 12, "metrics": {
            "fact_accuracy": {"base": 0.0, "tuned": 0.667, "delta": 0.667, "ci": [0.4, 0.9], "n": 12, "better": "higher"},
            "api_hallucination": {"base": 1.0, "tuned": 0.0, "delta": -1.0, "ci": [-1.0, -1.0], "n": 0,
                                  "better": "lower"}}, "flips": {}}
        store.finish_run(EVAL_RUN, "completed", {"adapter_run": TRAIN_RUNS[0], "dataset": "v1", "split": "test",
                                                 "sets": ["test", "probe", "retention"], "probe": probe_stats,
                                                 "test": stats, "retention": stats,
                                                 "judge": {"model": "judge-model",
                                                           "sets": {"test": verdicts, "retention": verdicts}}})
    finally:
        store.close()
    return {"project": PROJECT, "samples": samples, "train_runs": list(TRAIN_RUNS), "eval_run": EVAL_RUN,
            "synth_run": SYNTH_RUN}


def seed_continued_run(home: Path) -> None:
    """After `seed_store`: `train-continued`, which continued TRAIN_RUNS[0]'s adapter, and its evaluation
    `eval-continued` with the comparison against the previous adapter (changed files learned: ROUGE-L 0.25 ->
    0.75; unchanged kept: 0.8 -> 0.78)."""
    store = Store(home / DB_FILENAME, role="seed")
    try:
        store.create_run("train-continued", "train", PROJECT, {"dataset": "v1", "preset": "tiny", "train": {},
                                                               "parent_run": TRAIN_RUNS[0]})
        store.finish_run("train-continued", "completed", {"global_step": 5, "parent_run": TRAIN_RUNS[0]})
        group = {"n": 3, "sets": {"test": 1, "probe": 2}, "metrics": {"rouge_l": {
            "previous": 0.25, "continued": 0.75, "delta": 0.5, "ci": [0.4, 0.6], "n": 3, "better": "higher"}}}
        against = {"previous_run": TRAIN_RUNS[0], "previous_dataset": "v1", "dataset": "v2",
                   "files": {"added": 1, "changed": 2, "deleted": 1, "unchanged": 7},
                   "changed_files": ["docs/new.md", "docs/a.md", "docs/b.md"], "deleted_files": ["docs/gone.md"],
                   "groups": {"changed": group, "unchanged": {"n": 4, "sets": {"test": 2, "probe": 2}, "metrics": {
                       "rouge_l": {"previous": 0.8, "continued": 0.78, "delta": -0.02, "ci": [-0.05, 0.01], "n": 4,
                                   "better": "higher"}}}}}
        store.create_run("eval-continued", "eval", PROJECT, {"adapter_run": "train-continued", "dataset": "v1"})
        store.record_eval_results([{
            "run_id": "eval-continued", "adapter_run": "train-continued", "eval_set": "test", "sample_id": "s1",
            "task": "qa", "prompt": [{"role": "user", "content": "How?"}], "reference": "So.", "base_output": "No.",
            "tuned_output": "So.", "base_scores": {"rouge_l": 0.0}, "tuned_scores": {"rouge_l": 1.0}, "judge": None,
            "judge_detail": None}])
        store.finish_run("eval-continued", "completed", {"adapter_run": "train-continued", "split": "test",
                                                        "sets": ["test"], "against": against})
    finally:
        store.close()
