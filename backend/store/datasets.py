"""Datasets: curated, immutable versions of the samples, the judge scores curation used, review and profiles.

A version's rows are copies, never updated: review (`derive_dataset`) makes a new version. The
dashboard's corpus & dataset page reads `dataset_profile` and `browse_samples`, aggregated here so a
page receives kilobytes whatever the store's size.
"""

from __future__ import annotations

import json
from typing import Any

from backend.store.core import StoreCore, utc_now


class DatasetStore(StoreCore):
    """Judge scores, dataset versions, their samples, review and profiles."""

    def record_judgements(self, rows: list[dict]) -> None:
        if rows:
            self._insert("judgements", [dict(r, created_at=utc_now()) for r in rows])

    def judgements(self, sample_ids: list[str], model: str) -> dict[str, float]:
        rows = self.con.execute("SELECT sample_id, score FROM judgements WHERE model = ? AND "
                                "list_contains(?, sample_id)", [model, sample_ids]).fetchall()
        return dict(rows)

    def create_dataset(self, project: str, rows: list[dict], *, source_runs: list[str], config: dict,
                       stats: dict, parent: str | None = None, note: str | None = None) -> str:
        """A new immutable version `v<N>` holding copies of `rows` (each with its `split`)."""
        with self.transaction():
            n = self.con.execute("SELECT count(*) FROM datasets WHERE project = ?", [project]).fetchone()[0]
            version = f"v{n + 1}"
            self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [project, version, parent, source_runs, json.dumps(config), json.dumps(stats), note,
                              utc_now()])
            cols = [c for c, *_ in self.con.execute("DESCRIBE dataset_samples").fetchall()]
            self._insert("dataset_samples", [
                {c: (json.dumps(r.get(c)) if c == "messages" and r.get(c) else r.get(c))
                 for c in cols} | {"project": project, "version": version} for r in rows])
        return version

    def derive_dataset(self, project: str, version: str, *, edits: dict[str, dict] | None = None,
                       rejects: list[str] | None = None, note: str | None = None) -> str:
        """A new version: `version`'s rows without `rejects`, with `edits` (sample_id -> {field: text})
        applied to the copies. The old version is never changed.

        Raises:
            KeyError: no such version, or an edited/rejected sample that is not in it.
            ValueError: an edit of a field other than instruction, input or output, or nothing to change.
        """
        edits, rejects = edits or {}, list(rejects or [])
        if not edits and not rejects:
            raise ValueError("nothing to change: edit or reject at least one sample")
        bad = sorted({f for e in edits.values() for f in e} - {"instruction", "input", "output"})
        if bad:
            raise ValueError(f"only instruction, input and output can be edited, not {bad}")
        parent = self._dicts("SELECT source_runs, config, stats FROM datasets WHERE project = ? AND version = ?",
                             [project, version])
        if not parent:
            raise KeyError(f"dataset {project}/{version} does not exist")
        ids = sorted(set(edits) | set(rejects))
        found = {r[0] for r in self.con.execute(
            "SELECT sample_id FROM dataset_samples WHERE project = ? AND version = ? AND list_contains(?, sample_id)",
            [project, version, ids]).fetchall()}
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"samples not in {project}/{version}: {missing[:5]}")
        stats = (json.loads(parent[0]["stats"]) if parent[0]["stats"] else {}) | {
            "edited": len(set(edits) - set(rejects)), "rejected": len(set(rejects)), "derived_from": version}
        with self.transaction():
            n = self.con.execute("SELECT count(*) FROM datasets WHERE project = ?", [project]).fetchone()[0]
            new = f"v{n + 1}"
            self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [project, new, version, parent[0]["source_runs"], parent[0]["config"],
                              json.dumps(stats), note or f"reviewed copy of {version}", utc_now()])
            self.con.execute(
                "INSERT INTO dataset_samples SELECT * REPLACE (? AS version) FROM dataset_samples "
                "WHERE project = ? AND version = ? AND NOT list_contains(?, sample_id)",
                [new, project, version, rejects])
            for sample_id, fields in edits.items():
                if sample_id in rejects or not fields:
                    continue
                sets = ", ".join(f"{f} = ?" for f in fields)
                self.con.execute(f"UPDATE dataset_samples SET {sets} WHERE project = ? AND version = ? AND "
                                 "sample_id = ?", [*fields.values(), project, new, sample_id])
        return new

    def datasets(self, project: str) -> list[dict]:
        rows = self._dicts(
            """SELECT d.version, d.parent, d.source_runs, d.note, d.created_at, d.stats,
                      (SELECT count(*) FROM dataset_samples s WHERE s.project = d.project AND s.version = d.version)
                      AS samples
               FROM datasets d WHERE d.project = ? ORDER BY d.created_at""", [project])
        splits = self.con.execute(
            "SELECT version, split, count(*) FROM dataset_samples WHERE project = ? GROUP BY ALL", [project]).fetchall()
        for r in rows:
            r["stats"] = json.loads(r["stats"]) if r["stats"] else {}
            r["splits"] = {sp: n for v, sp, n in splits if v == r["version"]}
        return rows

    def latest_dataset(self, project: str) -> str | None:
        row = self.con.execute("SELECT version FROM datasets WHERE project = ? ORDER BY created_at DESC LIMIT 1",
                               [project]).fetchone()
        return row[0] if row else None

    def dataset_rows(self, project: str, version: str) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (project, version) FROM dataset_samples WHERE project = ? AND "
                           "version = ? ORDER BY split, sample_id", [project, version])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return rows

    def dataset_profile(self, project: str, version: str) -> dict[str, Any]:
        """What the corpus & dataset page draws for one version: splits, task and language mix,
        judge-score histogram, execution-check outcomes, coverage of source files, curation stats."""
        q = self.con.execute
        base = "FROM dataset_samples WHERE project = ? AND version = ?"
        args = [project, version]
        row = q(f"SELECT count(*), count(judge_score), count(DISTINCT path) {base}", args).fetchone()
        if not q("SELECT count(*) FROM datasets WHERE project = ? AND version = ?", args).fetchone()[0]:
            raise KeyError(f"{project}/{version}")
        n, judged, covered = row
        meta = self._dicts("SELECT parent, note, stats, created_at FROM datasets WHERE project = ? AND version = ?",
                           args)[0]
        files_with_chunks = q("SELECT count(DISTINCT path) FROM chunks WHERE project = ?", [project]).fetchone()[0]
        per_file = q(f"SELECT c, count(*) FROM (SELECT path, count(*) AS c {base} GROUP BY path) GROUP BY c "
                     "ORDER BY c", args).fetchall()
        return {
            "project": project, "version": version, "samples": n, "parent": meta["parent"], "note": meta["note"],
            "created_at": meta["created_at"], "curation": json.loads(meta["stats"]) if meta["stats"] else {},
            "splits": dict(q(f"SELECT split, count(*) {base} GROUP BY split ORDER BY split", args).fetchall()),
            "tasks": dict(q(f"SELECT task, count(*) {base} GROUP BY task ORDER BY task", args).fetchall()),
            "task_by_split": [dict(zip(("split", "task", "n"), r)) for r in q(
                f"SELECT split, task, count(*) {base} GROUP BY ALL ORDER BY ALL", args).fetchall()],
            "languages": dict(q(f"SELECT language, count(*) {base} GROUP BY language ORDER BY 2 DESC",
                                args).fetchall()),
            "exec_status": dict(q(f"SELECT coalesce(exec_status, 'not checked'), count(*) {base} GROUP BY 1 "
                                  "ORDER BY 1", args).fetchall()),
            "judged": judged,
            # judge scores are 1-10: one bar per half point
            "judge_histogram": dict(q(f"SELECT floor(judge_score * 2) / 2 AS s, count(*) {base} "
                                      "AND judge_score IS NOT NULL GROUP BY s ORDER BY s", args).fetchall()),
            "coverage": {
                "files_with_samples": covered, "files_with_chunks": files_with_chunks,
                "samples_per_file": dict(per_file),
                "top_files": [dict(zip(("path", "samples"), r)) for r in q(
                    f"SELECT path, count(*) {base} GROUP BY path ORDER BY 2 DESC, 1 LIMIT 25", args).fetchall()],
            },
        }

    def browse_samples(self, project: str, version: str, *, search: str | None = None, task: str | None = None,
                       split: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of a version's samples, filtered; `total` counts every match."""
        where = ["project = ?", "version = ?"]
        args: list = [project, version]
        if search:  # a plain substring: _ and % match themselves
            where.append("(instruction ILIKE ? ESCAPE '\\' OR input ILIKE ? ESCAPE '\\' OR output ILIKE ? ESCAPE '\\' "
                         "OR path ILIKE ? ESCAPE '\\')")
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern] * 4
        if task:
            where.append("task = ?")
            args.append(task)
        if split:
            where.append("split = ?")
            args.append(split)
        cond = " AND ".join(where)
        total = self.con.execute(f"SELECT count(*) FROM dataset_samples WHERE {cond}", args).fetchone()[0]
        rows = self._dicts(
            f"SELECT sample_id, split, task, language, path, start_line, end_line, judge_score, exec_status, "
            f"instruction, input, output, messages FROM dataset_samples WHERE {cond} "
            f"ORDER BY split, sample_id LIMIT ? OFFSET ?", args + [limit, offset])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return {"total": total, "rows": rows}
