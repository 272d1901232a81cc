"""Evaluation: base against tuned — the metric table with 95% intervals, the judge's win/tie/loss, and a
side-by-side viewer of prompt, reference, both outputs and their scores, filtered by flips and task type."""

import pandas as pd
import streamlit as st

from dashboard.common import client, failures_shown, project_picker, status_label

st.title("Evaluation")
dt = client()
PAGE_SIZE = 10


def metric_table(stats: dict) -> pd.DataFrame:
    rows = []
    for name, m in (stats.get("metrics") or {}).items():
        ci = m.get("ci") or [None, None]
        rows.append({"metric": name, "better": m.get("better"), "base": m.get("base"), "tuned": m.get("tuned"),
                     "Δ (tuned − base)": m.get("delta"), "95% CI low": ci[0], "95% CI high": ci[1],
                     "n": m.get("n")})
    return pd.DataFrame(rows)


def judge_bars(verdicts: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for outcome, color in (("win", "#2ca02c"), ("tie", "#bbbbbb"), ("loss", "#d62728")):
        fig.add_bar(y=["tuned vs base"], x=[verdicts.get(outcome, 0)], name=outcome, orientation="h",
                    marker_color=color)
    fig.update_layout(barmode="stack", height=170, margin=dict(l=10, r=10, t=30, b=10),
                      title="Judge: tuned against base")
    return fig


def evaluation(project: str) -> None:
    runs = [r for r in dt.runs(project, limit=500) if r["kind"] == "eval"]
    if not runs:
        st.info("No evaluation yet: `doctune eval --run TRAIN_RUN` compares a trained adapter with its base.")
        return
    ids = [r["run_id"] for r in runs]
    run_id = st.selectbox("Evaluation run", ids, format_func=lambda i: "{} ({}, adapter {})".format(
        i, *next((status_label(r["status"]), (r["summary"] or {}).get("adapter_run", "?"))
                 for r in runs if r["run_id"] == i)))
    run = next(r for r in runs if r["run_id"] == run_id)
    summary = run["summary"] or {}
    view = dt.eval_view(run_id, "test", limit=0)
    if not view["eval_sets"]:
        st.info(f"This evaluation is {run['status']} and has no results yet.")
        return
    eval_set = st.radio("Set", view["eval_sets"], index=view["eval_sets"].index("test")
                        if "test" in view["eval_sets"] else 0, horizontal=True)
    stats = summary.get(eval_set) or {}
    st.subheader("Metrics")
    if stats:
        st.dataframe(metric_table(stats), hide_index=True)
        flips = (stats.get("flips") or {}).get("rouge_l")
        if flips:
            st.caption(f"ROUGE-L flips (moved by more than 0.05): {flips.get('improved', 0)} improved, "
                       f"{flips.get('regressed', 0)} regressed, of {stats.get('n')}")
    judge = summary.get("judge") or {}
    verdicts = (judge.get("sets") or {}).get(eval_set)
    if verdicts:
        st.plotly_chart(judge_bars(verdicts), key="judge")
        if verdicts.get("win_rate") is not None:
            lo, hi = verdicts.get("ci") or (None, None)
            st.caption(f"Win rate {verdicts['win_rate']:.2f} (ties count half), 95% CI [{lo:.2f}, {hi:.2f}], "
                       f"judged by {judge.get('model')} in both orders")
    elif judge.get("skipped"):
        st.caption(f"Not judged: {judge['skipped']}")
    side_by_side(run_id, eval_set)


def side_by_side(run_id: str, eval_set: str) -> None:
    st.subheader("Side by side")
    first = dt.eval_view(run_id, eval_set, limit=0)
    c = st.columns(3)
    task = c[0].selectbox("Task", [""] + first["tasks"], key="eval-task", format_func=lambda t: t or "all")
    flip = c[1].selectbox("Flips (ROUGE-L)", ["all", "improved", "regressed"], key="eval-flip")
    page = st.session_state.get("eval-page", 1)
    view = dt.eval_view(run_id, eval_set, task=task or None, flip=None if flip == "all" else flip,
                        limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-view["total"] // PAGE_SIZE))
    if page > pages:
        page = st.session_state["eval-page"] = 1
        view = dt.eval_view(run_id, eval_set, task=task or None, flip=None if flip == "all" else flip,
                            limit=PAGE_SIZE)
    c[2].number_input(f"Page (of {pages}; {view['total']} rows)", 1, pages, key="eval-page")
    if not view["rows"]:
        st.info("No row matches these filters.")
    for r in view["rows"]:
        with st.container(border=True):
            prompt = r["prompt"]
            text = "\n\n".join(m.get("content", "") for m in prompt) if isinstance(prompt, list) else str(prompt)
            st.markdown(f"**{r['sample_id']}** · {r['task'] or ''}" + (f" · judge: **{r['judge']}**"
                                                                        if r["judge"] else ""))
            st.text(text[:4000])
            cols = st.columns(3)
            cols[0].caption("Reference")
            cols[0].text((r["reference"] or "")[:4000])
            cols[1].caption("Base " + _scores(r["base_scores"]))
            cols[1].text((r["base_output"] or "(empty output)")[:4000])
            cols[2].caption("Tuned " + _scores(r["tuned_scores"]))
            cols[2].text((r["tuned_output"] or "(empty output)")[:4000])


def _scores(scores: dict | None) -> str:
    return " · ".join(f"{k} {v:.3f}" for k, v in (scores or {}).items() if isinstance(v, (int, float)))


project = project_picker()
if project:
    with failures_shown("Loading the evaluation"):
        evaluation(project)
