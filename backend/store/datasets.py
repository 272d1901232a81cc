"""Datasets: curated, immutable versions of the samples, the judge scores curation used, review, lineage and
profiles.

A version's rows are copies, never updated: review (`derive_dataset`) makes a new version. Each version names its
parent and the operation that made it; a project's current version is what training and export use by default,
and reviews are kept as decisions per sample, carried into every later version of their line. The
dashboard's corpus & dataset page reads `dataset_profile` and `browse_samples`, aggregated here so a
page receives kilobytes whatever the store's size.
"""

from __future__ import annotations

import json
from typing import Any

from backend.review import EDITABLE, apply_edit
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
                       stats: dict, parent: str | None = None, note: str | None = None,
                       operation: str = "curation") -> str:
        """A new immutable version `v<N>` holding copies of `rows` (each with its `split`), made by `operation` on
        `parent`; it becomes the project's current version.

        The reviews of `parent`'s line are carried into it: a rejected sample is left out, an edited one edited
        again, as long as its source chunk is the one reviewed."""
        rows, carried = self._carry_reviews(project, parent, rows)
        if carried["edited"] or carried["rejected"]:
            stats = dict(stats, review_carried=carried)
        with self.transaction():
            version = self._new_version(project, parent, source_runs, config, stats, note, operation)
            cols = [c for c, *_ in self.con.execute("DESCRIBE dataset_samples").fetchall()]
            self._insert("dataset_samples", [
                {c: (json.dumps(r.get(c)) if c == "messages" and r.get(c) else r.get(c))
                 for c in cols} | {"project": project, "version": version} for r in rows])
            # the corpus it was made from: what a refresh and the drift views compare the repository with
            self.con.execute("INSERT INTO dataset_files SELECT project, ?, path, sha256, git_commit FROM files "
                             "WHERE project = ? AND status = 'ok'", [version, project])
        return version

    def derive_dataset(self, project: str, version: str, *, edits: dict[str, dict] | None = None,
                       rejects: list[str] | None = None, note: str | None = None) -> str:
        """A new version: `version`'s rows without `rejects`, with `edits` (sample_id -> {field: value}) applied to
        the copies (`backend.review.apply_edit`: a multi-turn sample's turns follow). The old version is never
        changed; the decisions are kept and carried into every later version of the new one's line.

        Raises:
            KeyError: no such version, or an edited/rejected sample that is not in it.
            ValueError: an edit of a field other than instruction, input, output or messages, messages edited on
                a single-turn sample, or nothing to change.
        """
        edits, rejects = edits or {}, list(rejects or [])
        if not edits and not rejects:
            raise ValueError("nothing to change: edit or reject at least one sample")
        bad = sorted({f for e in edits.values() for f in e} - set(EDITABLE))
        if bad:
            raise ValueError(f"only {', '.join(EDITABLE)} can be edited, not {bad}")
        parent = self._dicts("SELECT source_runs, config, stats FROM datasets WHERE project = ? AND version = ?",
                             [project, version])
        if not parent:
            raise KeyError(f"dataset {project}/{version} does not exist")
        ids = sorted(set(edits) | set(rejects))
        found = {r["sample_id"]: r for r in self._dicts(
            "SELECT sample_id, chunk_id, instruction, input, output, messages FROM dataset_samples "
            "WHERE project = ? AND version = ? AND list_contains(?, sample_id)", [project, version, ids])}
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"samples not in {project}/{version}: {missing[:5]}")
        edited = {sid: apply_edit(found[sid], fields) for sid, fields in edits.items() if sid not in rejects}
        stats = (json.loads(parent[0]["stats"]) if parent[0]["stats"] else {}) | {
            "edited": len(edited), "rejected": len(set(rejects)), "derived_from": version}
        with self.transaction():
            new = self._new_version(project, version, parent[0]["source_runs"], json.loads(parent[0]["config"] or "{}"),
                                    stats, note or f"reviewed copy of {version}", "review")
            self.con.execute(
                "INSERT INTO dataset_samples SELECT * REPLACE (? AS version) FROM dataset_samples "
                "WHERE project = ? AND version = ? AND NOT list_contains(?, sample_id)",
                [new, project, version, rejects])
            self.con.execute("INSERT INTO dataset_files SELECT * REPLACE (? AS version) FROM dataset_files "
                             "WHERE project = ? AND version = ?", [new, project, version])
            for sid, row in edited.items():
                self.con.execute(
                    "UPDATE dataset_samples SET instruction = ?, input = ?, output = ?, messages = ? "
                    "WHERE project = ? AND version = ? AND sample_id = ?",
                    [row["instruction"], row["input"], row["output"],
                     json.dumps(row["messages"]) if row["messages"] else None, project, new, sid])
            now = utc_now()
            self._insert("dataset_reviews", [
                {"project": project, "version": new, "sample_id": sid, "chunk_id": found[sid]["chunk_id"],
                 "reject": sid in rejects, "edits": None if sid in rejects else json.dumps(edits[sid]),
                 "created_at": now} for sid in ids])
        return new

    def _new_version(self, project: str, parent: str | None, source_runs, config: dict, stats: dict,
                     note: str | None, operation: str) -> str:
        """Record the next version `v<N>` and make it current (inside the caller's transaction)."""
        n = self.con.execute("SELECT count(*) FROM datasets WHERE project = ?", [project]).fetchone()[0]
        version = f"v{n + 1}"
        self.con.execute(
            "INSERT INTO datasets (project, version, parent, source_runs, config, stats, note, created_at, operation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [project, version, parent, source_runs, json.dumps(config), json.dumps(stats), note, utc_now(),
             operation])
        self.con.execute("INSERT OR REPLACE INTO dataset_current VALUES (?, ?)", [project, version])
        return version

    def _carry_reviews(self, project: str, parent: str | None, rows: list[dict]) -> tuple[list[dict], dict]:
        """`rows` with the reviews of `parent`'s line applied, oldest first; and how many it edited and left out.
        A review of a sample whose source chunk has changed since (another chunk id) no longer applies."""
        if parent is None:
            return rows, {"edited": 0, "rejected": 0}
        chain = [v["version"] for v in self.dataset_lineage(project, parent)["lineage"]]
        decisions: dict[str, list[dict]] = {}
        for d in self._dicts("SELECT sample_id, chunk_id, reject, edits FROM dataset_reviews WHERE project = ? AND "
                             "list_contains(?, version) ORDER BY created_at", [project, chain]):
            decisions.setdefault(d["sample_id"], []).append(d)
        out, edited, rejected = [], 0, 0
        for row in rows:
            mine = [d for d in decisions.get(row["sample_id"], []) if d["chunk_id"] == row.get("chunk_id")]
            if any(d["reject"] for d in mine):
                rejected += 1
                continue
            for d in mine:
                row = apply_edit(row, json.loads(d["edits"]))
            edited += bool(mine)
            out.append(row)
        return out, {"edited": edited, "rejected": rejected}

    def datasets(self, project: str) -> list[dict]:
        """Every version, oldest first, with its parent, the operation that made it, whether it is current, and
        its sample counts."""
        rows = self._dicts(
            """SELECT d.version, d.parent, d.operation, d.source_runs, d.note, d.created_at, d.stats,
                      (SELECT count(*) FROM dataset_samples s WHERE s.project = d.project AND s.version = d.version)
                      AS samples
               FROM datasets d WHERE d.project = ? ORDER BY d.created_at""", [project])
        splits = self.con.execute(
            "SELECT version, split, count(*) FROM dataset_samples WHERE project = ? GROUP BY ALL", [project]).fetchall()
        current = self.current_dataset(project)
        for r in rows:
            r["stats"] = json.loads(r["stats"]) if r["stats"] else {}
            r["splits"] = {sp: n for v, sp, n in splits if v == r["version"]}
            r["current"] = r["version"] == current
        return rows

    def latest_dataset(self, project: str) -> str | None:
        row = self.con.execute("SELECT version FROM datasets WHERE project = ? ORDER BY created_at DESC LIMIT 1",
                               [project]).fetchone()
        return row[0] if row else None

    def current_dataset(self, project: str) -> str | None:
        """The version training and export use by default: the one last made or chosen (else the latest)."""
        row = self.con.execute("SELECT version FROM dataset_current WHERE project = ?", [project]).fetchone()
        return row[0] if row else self.latest_dataset(project)

    def set_current_dataset(self, project: str, version: str) -> None:
        """Make `version` the default of training and export, and the line later synthesis adds onto.

        Raises:
            KeyError: no such version."""
        if not self.con.execute("SELECT count(*) FROM datasets WHERE project = ? AND version = ?",
                                [project, version]).fetchone()[0]:
            raise KeyError(f"dataset {project}/{version} does not exist")
        self.con.execute("INSERT OR REPLACE INTO dataset_current VALUES (?, ?)", [project, version])

    def dataset_lineage(self, project: str, version: str) -> dict[str, Any]:
        """`version`'s line back to its first version (`lineage`, newest first: version, parent, operation, note,
        created_at), whether it is current, and the reviews it leaves out (`left_out`: each review version not on
        its line, with its note and how many samples it decided on).

        Raises:
            KeyError: no such version."""
        meta = {r["version"]: r for r in self._dicts(
            "SELECT version, parent, operation, note, created_at FROM datasets WHERE project = ?", [project])}
        if version not in meta:
            raise KeyError(f"dataset {project}/{version} does not exist")
        lineage, v = [], version
        while v in meta and len(lineage) < len(meta):  # bounded: a parent loop cannot hang the store
            lineage.append(meta[v])
            v = meta[v]["parent"]
        on_line = {r["version"] for r in lineage}
        left_out = [dict(version=v, note=meta[v]["note"], samples=n) for v, n in self.con.execute(
            "SELECT version, count(DISTINCT sample_id) FROM dataset_reviews WHERE project = ? GROUP BY version "
            "ORDER BY min(created_at)", [project]).fetchall() if v not in on_line]
        return {"version": version, "current": version == self.current_dataset(project), "lineage": lineage,
                "left_out": left_out}

    def dataset_rows(self, project: str, version: str) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (project, version) FROM dataset_samples WHERE project = ? AND "
                           "version = ? ORDER BY split, sample_id", [project, version])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return rows

    def dataset_config(self, project: str, version: str) -> dict:
        """The curation settings that made `version` (`dataclasses.asdict` of its CurateConfig).

        Raises:
            KeyError: no such version."""
        row = self.con.execute("SELECT config FROM datasets WHERE project = ? AND version = ?",
                               [project, version]).fetchone()
        if row is None:
            raise KeyError(f"dataset {project}/{version} does not exist")
        return json.loads(row[0]) if row[0] else {}

    def dataset_files(self, project: str, version: str) -> dict[str, str]:
        """path -> sha256 of the files `version` was made from (`backend.refresh.changed_files` compares two)."""
        return dict(self.con.execute("SELECT path, sha256 FROM dataset_files WHERE project = ? AND version = ?",
                                     [project, version]).fetchall())

    def dataset_path_counts(self, project: str, version: str, split: str | None = None) -> dict[str, int]:
        """path -> how many of `version`'s samples (of `split`, or all) came from it."""
        return dict(self.con.execute(
            "SELECT path, count(*) FROM dataset_samples WHERE project = ? AND version = ? AND (? IS NULL OR split = ?) "
            "GROUP BY path", [project, version, split, split]).fetchall())

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
        meta = self._dicts("SELECT parent, operation, note, stats, created_at FROM datasets WHERE project = ? AND "
                           "version = ?", args)[0]
        files_with_chunks = q("SELECT count(DISTINCT path) FROM chunks WHERE project = ?", [project]).fetchone()[0]
        per_file = q(f"SELECT c, count(*) FROM (SELECT path, count(*) AS c {base} GROUP BY path) GROUP BY c "
                     "ORDER BY c", args).fetchall()
        return {
            "project": project, "version": version, "samples": n, "parent": meta["parent"],
            "operation": meta["operation"], "note": meta["note"],
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
