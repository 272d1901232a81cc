"""Overview: projects, dataset versions, recent and live runs with their status."""

import pandas as pd
import streamlit as st

from dashboard.common import LIVE, client, failures_shown, fmt_ts, status_label

st.title("Overview")
dt = client()


@st.fragment(run_every=3)
def runs_panel():
    """Refreshes itself every 3 s (without rerunning the page): live runs move on their own."""
    with failures_shown("Loading runs"):
        runs_table()


def runs_table():
    runs = dt.runs(limit=50)
    live = [r for r in runs if r["status"] in LIVE]
    c1, c2, c3 = st.columns(3)
    c1.metric("Live runs", len(live))
    c2.metric("Runs shown", len(runs))
    c3.metric("Failed or interrupted", sum(r["status"] in {"failed", "interrupted"} for r in runs))
    if not runs:
        st.info("No runs yet: start a synthesis on the Synthesis page, or `doctune synth --project NAME`.")
        return
    st.subheader("Recent runs")
    st.dataframe(pd.DataFrame([{
        "run": r["run_id"], "kind": r["kind"], "project": r["project"], "status": status_label(r["status"]),
        "started": fmt_ts(r["created_at"]), "finished": fmt_ts(r["finished_at"]),
        "summary": _one_line(r),
    } for r in runs]), hide_index=True)


def _one_line(r: dict) -> str:
    s = r["summary"] or {}
    if r["kind"] == "synth":
        return f"{s.get('samples', 0)} samples, {s.get('failed', 0)} failed, ${s.get('cost_usd', 0):.4f}"
    if r["kind"] == "train":
        loss = s.get("eval_loss")
        return f"step {s.get('global_step', '-')}" + (f", eval loss {loss:.3f}" if loss is not None else "")
    if r["kind"] == "eval":
        rouge = (s.get("test") or {}).get("metrics", {}).get("rouge_l") or {}
        return f"ROUGE-L Δ {rouge['delta']:+.3f}" if rouge.get("delta") is not None else ""
    if r["kind"] == "ingest":
        return f"{s.get('files_read', s.get('files', ''))} files"
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
                         "dataset versions": len(versions), "latest": latest["version"] if latest else "",
                         "latest samples": latest["samples"] if latest else 0,
                         "updated": fmt_ts(p["updated_at"])})
        st.dataframe(pd.DataFrame(rows), hide_index=True)
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
