"""Compare runs: overlay training runs' curves on step, epoch or tokens seen, with a config diff and a summary."""

import pandas as pd
import streamlit as st

from dashboard.common import client, curves, failures_shown, project_picker, status_label

st.title("Compare runs")
dt = client()
X_AXES = {"step": "step", "epoch": "epoch", "tokens seen": "num_tokens"}


def compare(project: str) -> None:
    runs = [r for r in dt.runs(project, limit=500) if r["kind"] == "train"]
    if not runs:
        st.info("No training run to compare yet.")
        return
    ids = [r["run_id"] for r in runs]
    picked = st.multiselect("Runs", ids, default=ids[:2])
    if not picked:
        st.info("Pick at least one run.")
        return
    c = st.columns([1, 3])
    x_label = c[0].radio("X axis", list(X_AXES), horizontal=False)
    available = dt.metric_names(picked)
    default = [m for m in ("loss", "eval_loss") if m in available]
    names = c[1].multiselect("Metrics", available, default=default)
    table = dt.compare_runs(picked)
    if names:
        fig = curves(dt.metric_series(picked, names, x=X_AXES[x_label]), "Curves", x_label, order=names)
        if fig is None:
            st.info(f"These runs logged no {', '.join(names)} against {x_label}.")
        else:
            st.plotly_chart(fig, key="overlay")
    st.subheader("Summary")
    st.dataframe(_shown([_summary(r) for r in table["runs"]]), hide_index=True)
    st.subheader("Config diff")
    if len(picked) < 2:
        st.caption("Pick two runs or more to see what differs.")
    elif not table["config_diff"]:
        st.caption("The configs are identical.")
    else:
        st.dataframe(pd.DataFrame([{"setting": k, **{run: repr(v) for run, v in vals.items()}}
                                   for k, vals in table["config_diff"].items()]), hide_index=True)


DIGITS = {"best eval loss": 4, "best train loss": 4, "tokens/s": 0, "peak GPU MB": 0, "peak RSS MB": 0,
          "ROUGE-L tuned": 3, "ROUGE-L Δ": 3, "judge win rate": 2}


def _summary(r: dict) -> dict:
    ev = r["eval"] or {}
    split = ev.get("split", "test")
    rouge = ((ev.get(split) or {}).get("metrics") or {}).get("rouge_l") or {}
    judge = ((ev.get("judge") or {}).get("sets") or {}).get(split) or {}
    return {"run": r["run_id"], "status": status_label(r["status"]), "dataset": r["config"].get("dataset"),
            "preset": r["config"].get("preset"), "steps": r["last_step"],
            "best eval loss": r["best_eval_loss"], "best train loss": r["best_train_loss"],
            "tokens/s": r["tokens_per_second"], "peak GPU MB": r["peak_gpu_mb"], "peak RSS MB": r["peak_rss_mb"],
            "ROUGE-L tuned": rouge.get("tuned"), "ROUGE-L Δ": rouge.get("delta"),
            "judge win rate": judge.get("win_rate")}


def _shown(rows: list[dict]) -> pd.DataFrame:
    """Figures rounded for reading and a missing one as `–` (the grid would print `None`, and every digit)."""
    return pd.DataFrame([{k: "–" if v is None else f"{v:.{DIGITS[k]}f}" if k in DIGITS else v
                          for k, v in row.items()} for row in rows])


project = project_picker()
if project:
    with failures_shown("Comparing runs"):
        compare(project)
