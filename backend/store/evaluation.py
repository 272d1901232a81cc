"""Evaluation: the side-by-side rows of evaluation runs (base vs tuned output, scores, judge verdicts).

Evaluation runs write one row per held-out prompt; the dashboard pages through them with `eval_view`.
"""

from __future__ import annotations

import json

from backend.store.core import StoreCore, utc_now


class EvaluationStore(StoreCore):
    """Evaluation results and the views over them."""

    def record_eval_results(self, rows: list[dict]) -> None:
        if rows:
            now = utc_now()
            self._insert("eval_results", [
                {k: (json.dumps(v, default=str) if k in {"prompt", "base_scores", "tuned_scores", "judge_detail",
                                                          "details"}
                     and v is not None else v) for k, v in r.items()} | {"created_at": now} for r in rows])

    def set_eval_judgements(self, run_id: str, verdicts: dict[tuple[str, str], tuple[str, dict]]) -> None:
        """(eval_set, sample_id) -> (win | tie | loss, detail) for an evaluation run."""
        with self.transaction():
            for (eval_set, sample_id), (verdict, detail) in verdicts.items():
                self.con.execute("UPDATE eval_results SET judge = ?, judge_detail = ? WHERE run_id = ? AND "
                                 "eval_set = ? AND sample_id = ?",
                                 [verdict, json.dumps(detail, default=str), run_id, eval_set, sample_id])

    def eval_results(self, run_id: str, eval_set: str | None = None) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (created_at) FROM eval_results WHERE run_id = ? AND "
                           "(? IS NULL OR eval_set = ?) ORDER BY eval_set, sample_id", [run_id, eval_set, eval_set])
        for r in rows:
            for k in ("prompt", "base_scores", "tuned_scores", "judge_detail", "details"):
                r[k] = json.loads(r[k]) if r[k] else None
        return rows

    def eval_view(self, run_id: str, eval_set: str, *, task: str | None = None, flip: str | None = None,
                  metric: str = "rouge_l", tolerance: float = 0.05, limit: int = 50, offset: int = 0) -> dict:
        """One page of an evaluation's side-by-side rows; `flip` = improved | regressed keeps the samples whose
        `metric` moved by more than `tolerance` that way (higher is better, as for rouge_l); `flip` =
        hallucination_fixed keeps those where the base invented a repository name and the tuned model was right
        (stated the probe's fact, or, without a fact, used the reference's names and invented none)."""
        where = ["run_id = ?", "eval_set = ?"]
        args: list = [run_id, eval_set]
        if task:
            where.append("task = ?")
            args.append(task)
        delta = (f"(TRY_CAST(json_extract_string(tuned_scores, '$.{metric}') AS DOUBLE) - "
                 f"TRY_CAST(json_extract_string(base_scores, '$.{metric}') AS DOUBLE))")
        if flip == "improved":
            where.append(f"{delta} > ?")
            args.append(tolerance)
        elif flip == "regressed":
            where.append(f"{delta} < ?")
            args.append(-tolerance)
        elif flip == "hallucination_fixed":
            score = lambda side, m: f"TRY_CAST(json_extract_string({side}_scores, '$.{m}') AS DOUBLE)"
            where.append(f"""{score('base', 'api_hallucination')} > 0 AND (
                {score('tuned', 'fact_accuracy')} = 1 OR (fact IS NULL AND {score('tuned', 'api_recall')} > 0
                AND coalesce({score('tuned', 'api_hallucination')}, 0) = 0))""")
        elif flip is not None:
            raise ValueError(f"flip={flip!r}: use 'improved', 'regressed', 'hallucination_fixed' or None")
        cond = " AND ".join(where)
        total = self.con.execute(f"SELECT count(*) FROM eval_results WHERE {cond}", args).fetchone()[0]
        rows = self._dicts(f"SELECT * EXCLUDE (created_at) FROM eval_results WHERE {cond} ORDER BY sample_id "
                           "LIMIT ? OFFSET ?", args + [limit, offset])
        for r in rows:
            for k in ("prompt", "base_scores", "tuned_scores", "judge_detail", "details"):
                r[k] = json.loads(r[k]) if r[k] else None
        judge = dict(self.con.execute("SELECT coalesce(judge, 'not judged'), count(*) FROM eval_results WHERE "
                                      "run_id = ? AND eval_set = ? GROUP BY 1", [run_id, eval_set]).fetchall())
        tasks = [r[0] for r in self.con.execute("SELECT DISTINCT task FROM eval_results WHERE run_id = ? AND "
                                                "eval_set = ? ORDER BY 1", [run_id, eval_set]).fetchall()]
        sets = [r[0] for r in self.con.execute("SELECT DISTINCT eval_set FROM eval_results WHERE run_id = ? "
                                               "ORDER BY 1", [run_id]).fetchall()]
        return {"total": total, "rows": rows, "judge": judge, "tasks": tasks, "eval_sets": sets}
