"""Synthesis: paid responses, the request log, samples and dead letters of synthesis runs.

A synthesis run's unit of work is one cache key; `record_synth_batch` lands a batch of them in one
transaction, so `finished_units` says exactly what a resumed run may skip. A synthesis run is a run,
so this store builds on the run store (`synth_progress` reads the run's row).
"""

from __future__ import annotations

import json
from typing import Any

from backend.store.core import utc_now
from backend.store.runs import RunStore


class SynthesisStore(RunStore):
    """Responses, API requests, samples and dead letters."""

    def cached_responses(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        rows = self._dicts("SELECT cache_key, content, tokens_in, tokens_out, cost_usd FROM responses "
                           "WHERE list_contains(?, cache_key)", [keys])
        return {r["cache_key"]: r for r in rows}

    def record_synth_batch(self, run_id: str, responses: list[dict], requests: list[dict], samples: list[dict],
                           dead: list[dict], resolved: list[str]) -> None:
        """One transaction: cached responses, the request log, samples, new and resolved dead letters."""
        now = utc_now()
        with self.transaction():
            for r in responses:
                self.con.execute(
                    "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [r["cache_key"], r["model"], r["content"], r["tokens_in"], r["tokens_out"], r["cost_usd"], now])
            if requests:
                self._insert("api_requests", [dict(r, run_id=run_id, ts=now) for r in requests])
            if samples:
                self._insert("samples", [dict(s, messages=json.dumps(s["messages"]) if s.get("messages") else None,
                                              created_at=now) for s in samples], on_conflict=True)
            if resolved:
                self.con.execute("UPDATE dead_letters SET resolved = true WHERE run_id = ? AND "
                                 "list_contains(?, cache_key)", [run_id, resolved])
            if dead:
                self._insert("dead_letters", [dict(d, run_id=run_id, resolved=False, created_at=now) for d in dead])

    def finished_units(self, run_id: str) -> dict[str, str]:
        """cache_key -> 'ok' (its samples are stored) or 'dead' (an unresolved dead letter)."""
        out = {k: "dead" for (k,) in self.con.execute(
            "SELECT cache_key FROM dead_letters WHERE run_id = ? AND NOT resolved", [run_id]).fetchall()}
        out.update({k: "ok" for (k,) in self.con.execute(
            "SELECT DISTINCT cache_key FROM samples WHERE run_id = ?", [run_id]).fetchall()})
        return out

    def run_usage(self, run_id: str) -> dict:
        row = self.con.execute(
            """SELECT count(*), count(*) FILTER (WHERE status LIKE 'ok%'), count(*) FILTER (WHERE status = 'http_429'),
                      coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost_usd), 0)
               FROM api_requests WHERE run_id = ?""", [run_id]).fetchone()
        samples = self.con.execute("SELECT count(*) FROM samples WHERE run_id = ?", [run_id]).fetchone()[0]
        dead = self.con.execute("SELECT count(*) FROM dead_letters WHERE run_id = ? AND NOT resolved",
                                [run_id]).fetchone()[0]
        return {"requests": row[0], "ok": row[1], "http_429": row[2], "tokens_in": int(row[3]),
                "tokens_out": int(row[4]), "cost_usd": round(float(row[5]), 6), "samples": samples,
                "dead_letters": dead}

    def synth_progress(self, run_id: str) -> dict[str, Any]:
        """A synthesis run's live figures: usage so far and requests in the last minute."""
        run = self.run(run_id)
        if run is None:
            raise KeyError(run_id)
        usage = self.run_usage(run_id)
        rpm = self.con.execute("SELECT count(*) FROM api_requests WHERE run_id = ? AND ts > ? - INTERVAL 60 SECOND",
                               [run_id, utc_now()]).fetchone()[0]
        done = self.con.execute("SELECT count(DISTINCT cache_key) FROM samples WHERE run_id = ?",
                                [run_id]).fetchone()[0]
        # failed attempts by class (llm_request.classify's statuses, parse_error for an unusable answer): a run
        # that retried its way through 5xx answers has no dead letter, yet half its requests failed
        failures = dict(self.con.execute(
            "SELECT status, count(*) FROM api_requests WHERE run_id = ? AND status NOT LIKE 'ok%' GROUP BY status "
            "ORDER BY status", [run_id]).fetchall())
        dead_reasons = dict(self.con.execute(
            "SELECT reason, count(*) FROM dead_letters WHERE run_id = ? AND NOT resolved GROUP BY reason "
            "ORDER BY reason", [run_id]).fetchall())
        return usage | {"run_id": run_id, "status": run["status"], "requests_last_minute": rpm,
                        "failures": failures, "dead_reasons": dead_reasons,
                        "retries": run["summary"].get("retries", []),
                        "units_done": done + usage["dead_letters"], "units": run["summary"].get("units"),
                        "dataset": run["summary"].get("dataset"), "created_at": run["created_at"],
                        "finished_at": run["finished_at"], "error": run["error"]}

    def resolve_covered_dead_letters(self, run_id: str, by_run: str) -> int:
        """Resolve `run_id`'s dead letters whose chunk `by_run` (a run of another generator, whose task draw may
        differ) made samples for; returns how many."""
        with self.transaction():
            covered = self.con.execute(
                """SELECT count(*) FROM dead_letters d WHERE d.run_id = ? AND NOT d.resolved AND EXISTS (
                       SELECT 1 FROM samples s WHERE s.run_id = ? AND s.chunk_id = d.chunk_id)""",
                [run_id, by_run]).fetchone()[0]
            self.con.execute(
                """UPDATE dead_letters d SET resolved = true WHERE d.run_id = ? AND NOT d.resolved AND EXISTS (
                       SELECT 1 FROM samples s WHERE s.run_id = ? AND s.chunk_id = d.chunk_id)""",
                [run_id, by_run])
        return covered

    def requests(self, run_id: str) -> list[dict]:
        """The run's request log, oldest first."""
        return self._dicts("SELECT * FROM api_requests WHERE run_id = ? ORDER BY ts", [run_id])

    def dead_letters(self, project: str | None = None, run_id: str | None = None,
                     unresolved_only: bool = True) -> list[dict]:
        """Dead letters, oldest first, each with its chunk's `path` and line range (`start_line`, `end_line`; None
        for a chunk since re-ingested away), so a person can open what failed."""
        return self._dicts(
            """SELECT d.*, c.path, c.start_line, c.end_line FROM dead_letters d JOIN runs r USING (run_id)
               LEFT JOIN (SELECT chunk_id, project, any_value(path) AS path, min(start_line) AS start_line,
                                 max(end_line) AS end_line FROM chunks GROUP BY chunk_id, project) c
                      ON c.chunk_id = d.chunk_id AND c.project = r.project
               WHERE (? IS NULL OR r.project = ?) AND (? IS NULL OR d.run_id = ?) AND (NOT ? OR NOT d.resolved)
               ORDER BY d.created_at, d.cache_key""", [project, project, run_id, run_id, unresolved_only])

    def dead_letter_keys(self, run_ids: list[str]) -> list[str]:
        """The cache keys of the dead letters of `run_ids` (resolved or not)."""
        return [k for (k,) in self.con.execute("SELECT DISTINCT cache_key FROM dead_letters WHERE "
                                               "list_contains(?, run_id) ORDER BY 1", [run_ids]).fetchall()]

    def samples(self, run_ids: list[str]) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (created_at) FROM samples WHERE list_contains(?, run_id) "
                           "ORDER BY sample_id", [run_ids])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return rows
