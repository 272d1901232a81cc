"""Runs: the lifecycle every stage shares (ingest, synthesis, training, evaluation), their metrics and events.

A run is a row in `runs` from `create_run` to `finish_run`; training streams its metrics and events
here while it goes, and the dashboard reads them back aggregated (`metric_series`, `run_table`), so a
page receives a few hundred points whatever the run's length.
"""

from __future__ import annotations

import json

import pyarrow as pa

from backend.store.core import StoreCore, utc_now


class RunStore(StoreCore):
    """Runs, their metrics and their events."""

    def create_run(self, run_id: str, kind: str, project: str | None, config: dict) -> None:
        self.con.execute(
            "INSERT INTO runs (run_id, project, kind, status, config, created_at) VALUES (?, ?, ?, 'running', ?, ?)",
            [run_id, project, kind, json.dumps(config), utc_now()],
        )

    def update_run(self, run_id: str, status: str | None = None, summary: dict | None = None) -> None:
        """Live status/summary of a run that is still going (finish_run ends it)."""
        if status is not None:
            self.con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])
        if summary is not None:
            self.con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [json.dumps(summary, default=str), run_id])

    def set_run_status(self, run_id: str, status: str) -> None:
        self.con.execute("UPDATE runs SET status = ?, finished_at = NULL WHERE run_id = ?", [status, run_id])

    def finish_run(self, run_id: str, status: str, summary: dict, error: str | None = None,
                   keep_finished_at: bool = False) -> None:
        """End a run; `keep_finished_at`: a retry of a finished run's dead letters, which must not move the time
        the run itself finished (its own time goes into the summary's `retries`)."""
        self.con.execute(
            "UPDATE runs SET status = ?, summary = ?, error = ?, "
            "finished_at = CASE WHEN ? AND finished_at IS NOT NULL THEN finished_at ELSE ? END WHERE run_id = ?",
            [status, json.dumps(summary), error, keep_finished_at, utc_now(), run_id],
        )

    def find_run(self, project: str, kind: str, fingerprint: str, unfinished_only: bool = True) -> str | None:
        """The newest run of `kind` whose config has this fingerprint; by default only an unfinished one
        (running when its process died, interrupted, failed, cancelled or stopped by the budget), to resume it."""
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE project = ? AND kind = ? AND json_extract_string(config, '$.fingerprint') = ? "
            "AND (NOT ? OR status IN ('running', 'interrupted', 'failed', 'cancelled', 'budget_stopped')) "
            "ORDER BY created_at DESC LIMIT 1", [project, kind, fingerprint, unfinished_only]).fetchone()
        return row[0] if row else None

    def run(self, run_id: str) -> dict | None:
        rows = self._dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            return None
        row = rows[0]
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return row

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        rows = self._dicts(
            "SELECT run_id, project, kind, status, summary, error, created_at, finished_at FROM runs "
            "WHERE ? IS NULL OR project = ? ORDER BY created_at DESC LIMIT ?",
            [project, project, limit],
        )
        for row in rows:
            row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return rows

    def run_table(self, run_ids: list[str]) -> list[dict]:
        """Training runs side by side: config, summary, and aggregates of their metrics."""
        rows = self._dicts("SELECT run_id, project, kind, status, config, summary, created_at, finished_at FROM runs "
                           "WHERE list_contains(?, run_id) ORDER BY created_at", [run_ids])
        aggs = {r[0]: r[1:] for r in self.con.execute(
            """SELECT run_id, min(value) FILTER (WHERE name = 'eval_loss'), min(value) FILTER (WHERE name = 'loss'),
                      avg(value) FILTER (WHERE name = 'tokens_per_second'),
                      max(value) FILTER (WHERE name = 'gpu_mem_peak_mb'), max(value) FILTER (WHERE name = 'rss_mb'),
                      max(step)
               FROM metrics WHERE list_contains(?, run_id) GROUP BY run_id""", [run_ids]).fetchall()}
        evals = self._dicts("SELECT run_id, json_extract_string(config, '$.adapter_run') AS adapter_run, summary "
                            "FROM runs WHERE kind = 'eval' AND status = 'completed' AND "
                            "list_contains(?, json_extract_string(config, '$.adapter_run')) ORDER BY created_at",
                            [run_ids])
        latest_eval = {e["adapter_run"]: json.loads(e["summary"]) if e["summary"] else {} for e in evals}
        for r in rows:
            r["config"] = json.loads(r["config"]) if r["config"] else {}
            r["summary"] = json.loads(r["summary"]) if r["summary"] else {}
            best_eval, best_loss, tps, gpu, rss, last = aggs.get(r["run_id"], (None,) * 6)
            r["best_eval_loss"], r["best_train_loss"] = best_eval, best_loss
            r["tokens_per_second"] = tps if tps is not None else r["summary"].get("tokens_per_second")
            r["peak_gpu_mb"], r["peak_rss_mb"], r["last_step"] = gpu, rss, last
            r["eval"] = latest_eval.get(r["run_id"])
        return rows

    def follow_up_runs(self, train_run: str) -> list[dict]:
        """The evaluations and merges of a training run's adapter, newest first (run_id, kind, status, summary,
        error, created_at, finished_at)."""
        rows = self._dicts(
            "SELECT run_id, kind, status, summary, error, created_at, finished_at FROM runs WHERE "
            "(kind = 'eval' AND json_extract_string(config, '$.adapter_run') = ?) OR "
            "(kind = 'merge' AND json_extract_string(config, '$.train_run') = ?) ORDER BY created_at DESC",
            [train_run, train_run])
        for row in rows:
            row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return rows

    def record_metrics(self, run_id: str, rows: list[tuple[int, str, float]]) -> None:
        """(step, name, value) rows of one run, in one insert."""
        if rows:
            now = utc_now()
            self._insert("metrics", [{"run_id": run_id, "step": step, "name": name, "value": value, "ts": now}
                                     for step, name, value in rows])

    def rewind_metrics(self, run_id: str, step: int, history: list[tuple[int, str, float]]) -> int:
        """A run resuming from its checkpoint at `step`: the metrics logged after it belong to the lost
        attempt and go; those the checkpoint recorded but the store never received are added. Returns the
        rows added."""
        with self.transaction():
            self.con.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, step])
            have = set(self.con.execute("SELECT step, name FROM metrics WHERE run_id = ?", [run_id]).fetchall())
            missing = [r for r in history if r[0] <= step and (r[0], r[1]) not in have]
            self.record_metrics(run_id, missing)
        return len(missing)

    def metrics(self, run_id: str, names: list[str] | None = None) -> pa.Table:
        """step, name, value, ts of a run (all names, or those given), in step order."""
        return self._arrow("SELECT step, name, value, ts FROM metrics WHERE run_id = $1 AND "
                           "($2::VARCHAR[] IS NULL OR list_contains($2::VARCHAR[], name)) ORDER BY step, name",
                           [run_id, names])

    def latest_metrics(self, run_id: str, names: list[str]) -> dict[str, dict]:
        """name -> {step, value, ts} of each metric's last logged value (a live panel's headline numbers)."""
        rows = self._dicts("SELECT name, arg_max(step, step) AS step, arg_max(value, step) AS value, max(ts) AS ts "
                           "FROM metrics WHERE run_id = ? AND list_contains(?, name) GROUP BY name",
                           [run_id, names])
        return {r.pop("name"): r for r in rows}

    def metric_names(self, run_ids: list[str]) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT name FROM metrics WHERE list_contains(?, run_id) ORDER BY 1", [run_ids]).fetchall()]

    def metric_series(self, run_ids: list[str], names: list[str], *, x: str = "step",
                      max_points: int = 400) -> pa.Table:
        """run_id, name, x, value (and the bucket's min/max): each series averaged into at most `max_points`
        buckets of `x`, so a chart gets the same few hundred points for 100 steps or 100,000.

        Args:
            x: `step`, or another logged metric to plot against (`epoch`, `num_tokens`), matched to each point
                as its latest value at or before the point's step.
        """
        xs = "" if x == "step" else (
            "ASOF JOIN (SELECT run_id, step, value AS x FROM metrics WHERE list_contains($1, run_id) AND name = $4) xs "
            "ON m.run_id = xs.run_id AND m.step >= xs.step")
        x_col = "m.step" if x == "step" else "xs.x"
        return self._arrow(f"""
            WITH m AS (SELECT run_id, step, name, value FROM metrics
                       WHERE list_contains($1, run_id) AND list_contains($2, name) AND isfinite(value)),
            p AS (SELECT m.run_id, m.name, {x_col} AS x, m.value FROM m {xs}),
            r AS (SELECT run_id, name, min(x) AS lo, max(x) AS hi FROM p GROUP BY ALL)
            SELECT run_id, name, avg(x) AS x, avg(value) AS value, min(value) AS min, max(value) AS max
            FROM p JOIN r USING (run_id, name)
            GROUP BY run_id, name,
                     CASE WHEN hi = lo THEN 0 ELSE least(floor((x - lo) / (hi - lo) * $3), $3 - 1) END
            ORDER BY run_id, name, x""", [run_ids, names, max_points] + ([] if x == "step" else [x]))

    def limiter_timeline(self, run_id: str) -> list[dict]:
        """A synthesis run's limiter over time (`Limiter.timeline_point` in actors/llm_pool.py), one row per point:
        `t` (seconds since the first point), ok / rate_limited / errors `_per_min` and stalls since the point
        before (the first point: since the start), the in-flight cap, requests in flight, the rate (requests per
        minute)."""
        rows = self.con.execute(
            "SELECT step, name, value FROM metrics WHERE run_id = ? AND starts_with(name, 'limiter/') ORDER BY step",
            [run_id]).fetchall()
        points: dict[int, dict] = {}
        for step, name, value in rows:
            points.setdefault(step, {"step": step})[name.removeprefix("limiter/")] = value
        out, prev = [], None
        for p in points.values():
            row = {"t": p["step"] - rows[0][0], "cap": p.get("cap"), "in_flight": p.get("in_flight"),
                   "rate_rpm": p.get("rate_rpm")}
            for k in ("ok", "rate_limited", "errors", "stalls"):
                before = prev.get(k, 0) if prev else 0
                # counts start again at 0 when a resumed run gets a new limiter
                delta = p.get(k, 0) - before if p.get(k, 0) >= before else p.get(k, 0)
                if k == "stalls":
                    row[k] = delta
                else:
                    row[f"{k}_per_min"] = delta * 60 / (p["step"] - prev["step"]) if prev else None
            out.append(row)
            prev = p
        return out

    def record_event(self, run_id: str, kind: str, detail: dict | None = None) -> None:
        self.con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)",
                         [run_id, kind, json.dumps(detail or {}, default=str), utc_now()])

    def run_events(self, run_id: str) -> list[dict]:
        rows = self._dicts("SELECT kind, detail, ts FROM run_events WHERE run_id = ? ORDER BY ts", [run_id])
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r["detail"] else {}
        return rows
