"""Overview: projects, dataset versions, recent and live runs with their status; each run opens on its page."""

import pandas as pd
import streamlit as st

from dashboard.common import LIVE, client, failures_shown, fmt_ts, report_table, run_link, status_label

st.title("Overview")
dt = client()
RUNS_LISTED = 50


@st.fragment(run_every=3)
def runs_panel():
    """Refreshes itself every 3 s (without rerunning the page): live runs move on their own."""
    with failures_shown("Loading runs"):
        runs_table()


def runs_table():
    runs = dt.runs(limit=RUNS_LISTED)
    live = [r for r in runs if r["status"] in LIVE]
    c1, c2, c3 = st.columns(3)
    c1.metric("Live runs", len(live), help="queued or running now")
    c2.metric("Runs listed", len(runs), help=f"the {RUNS_LISTED} newest runs of every project and kind, below")
    c3.metric("Failed or interrupted", sum(r["status"] in {"failed", "interrupted"} for r in runs),
              help="of the runs listed; rerunning the same command resumes what it can")
    if not runs:
        st.info("No runs yet: start a synthesis on the Synthesis page, or `doctune synth --project NAME`.")
        return
    st.subheader("Recent runs")
    st.dataframe(pd.DataFrame([{
        "run": r["run_id"], "open": run_link(r), "kind": r["kind"], "project": r["project"],
        "status": status_label(r["status"]), "started": fmt_ts(r["created_at"]),
        "finished": fmt_ts(r["finished_at"]), "summary": one_line(r),
    } for r in runs]), hide_index=True, column_config={
        "open": st.column_config.LinkColumn("open", display_text="open ↗", help="the run on its page"),
        "summary": st.column_config.TextColumn("summary", width="large")})
    run_detail(runs)


def run_detail(runs: list[dict]) -> None:
    """One run's whole summary and error: the table's cells are cut at their width."""
    ids = [r["run_id"] for r in runs]
    with st.expander("Details of a run"):
        run_id = st.selectbox("Run", ids, key="overview-run")
        r = runs[ids.index(run_id)]
        st.markdown(f"[Open {run_id} on its page]({run_link(r)})")
        if r["error"]:
            st.error(r["error"])
        if r["summary"]:
            st.dataframe(report_table(r["summary"]), hide_index=True)


def one_line(r: dict) -> str:
    s = r["summary"] or {}
    if r["kind"] == "synth":
        failed = s.get("dead_letters", s.get("failed", 0))
        cost = f"${s['cost_usd']:.4f}" if s.get("cost_usd") else "no cost"
        return f"{s.get('samples', 0)} samples (before curation), {failed} dead letters, {cost}" + (
            f" → {s['dataset']}" if s.get("dataset") else "")
    if r["kind"] == "train":
        loss = s.get("eval_loss")
        return f"step {s.get('global_step', '-')}" + (f", eval loss {loss:.3f}" if loss is not None else "")
    if r["kind"] == "eval":
        rouge = (s.get("test") or {}).get("metrics", {}).get("rouge_l") or {}
        return f"ROUGE-L Δ {rouge['delta']:+.3f}" if rouge.get("delta") is not None else ""
    if r["kind"] == "ingest":  # the keys IngestReport stores
        skipped = sum((s.get("skipped") or {}).values())
        return (f"{s.get('new', 0)} new, {s.get('changed', 0)} changed, {s.get('unchanged', 0)} unchanged, "
                f"{skipped} skipped, {s.get('gone', 0)} gone files; {s.get('chunks_written', 0)} chunks written")
    if r["kind"] == "curate" and s.get("version"):
        return f"→ {s['version']}"
    return ""


with failures_shown("Loading projects"):
    projects = dt.projects()
    st.subheader("Projects")
    if not projects:
        st.info("No project yet. Ingest a repository: `doctune ingest PATH --project NAME`, "
                "or run `doctune demo` for the bundled sample repository.")
    else:
        rows = []
        for p in projects:
            versions = dt.datasets(p["name"])
            latest = versions[-1] if versions else None
            rows.append({"project": p["name"], "root": p["root"], "files": p["files"], "chunks": p["chunks"],
                         "dataset versions": len(versions), "latest version": latest["version"] if latest else "",
                         "its samples": latest["samples"] if latest else 0, "updated": fmt_ts(p["updated_at"])})
        st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
            "its samples": st.column_config.NumberColumn(
                "its samples", help="samples in the latest dataset version, after curation (validated, "
                                    "deduplicated); a synthesis run counts its samples before curation")})
        st.caption("A dataset version holds the curated samples of its runs; a synthesis run's own count is "
                   "before curation, so it is larger.")
        with st.expander("Dataset versions"):
            for p in projects:
                versions = dt.datasets(p["name"])
                if versions:
                    st.markdown(f"**{p['name']}**")
                    st.dataframe(pd.DataFrame([{
                        "version": v["version"], "parent": v["parent"] or "", "samples": v["samples"],
                        **{f"{k}": n for k, n in sorted(v["splits"].items())}, "note": v["note"] or "",
                        "created": fmt_ts(v["created_at"])} for v in versions]), hide_index=True)

runs_panel()
