"""Evaluation: base against tuned on three sets (held-out files, knowledge probes, general coding) — the metric
table with 95% intervals, what the model learned in plain words, the judge's win/tie/loss, and a side-by-side
viewer of prompt, reference, both outputs and their scores, filtered by flips, hallucinations and task type; for an
adapter that continued another, the two adapters on the files that changed and on those that did not."""

import pandas as pd
import streamlit as st

from backend.eval_config import SET_MEANING, SIDES
from dashboard.common import LIVE, client, failures_shown, project_picker, status_label

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
    order = [s for s in (summary.get("split", "test"), "probe", "retention") if s in view["eval_sets"]]
    order += [s for s in view["eval_sets"] if s not in order]
    eval_set = st.radio("Set", order, horizontal=True, format_func=lambda s: {"probe": "probe (knowledge)"}.get(s, s))
    glossary(eval_set)
    health = dt.eval_health(run_id, eval_set)
    warnings(health)
    stats = summary.get(eval_set) or {}
    if eval_set == "probe":
        learned(run_id)
    st.subheader("Metrics")
    if stats:
        st.dataframe(metric_table(stats), hide_index=True)
        flips = (stats.get("flips") or {}).get("rouge_l")
        if flips:
            st.caption(f"ROUGE-L flips (moved by more than 0.05): {flips.get('improved', 0)} improved, "
                       f"{flips.get('regressed', 0)} regressed, of {stats.get('n')}")
    judge_status(summary.get("judge") or {}, eval_set, run["status"])
    if summary.get("against"):
        against_previous(summary["against"])
    side_by_side(run_id, eval_set)


def against_previous(a: dict) -> None:
    """The continued adapter against the one it continued: per group of files, each metric for both."""
    st.subheader("Against the previous adapter")
    files = a["files"]
    st.caption(f"Adapter {a['previous_run']} (dataset {a['previous_dataset']}) against this one (dataset "
               f"{a['dataset']}): {files['added']} files added, {files['changed']} changed, {files['deleted']} "
               f"deleted, {files['unchanged']} unchanged. Δ is continued − previous, with its 95% interval.")
    for group, question in (("changed", "Changed files: did it learn the change?"),
                            ("unchanged", "Unchanged files: did it keep the rest?")):
        g = a["groups"][group]
        st.markdown(f"**{question}** ({g['n']} prompts: "
                    + (", ".join(f"{n} {s}" for s, n in g["sets"].items()) or "none") + ")")
        rows = [{"metric": m, "better": v["better"], "previous": v["previous"], "continued": v["continued"],
                 "Δ (continued − previous)": v["delta"], "95% CI low": (v["ci"] or [None, None])[0],
                 "95% CI high": (v["ci"] or [None, None])[1], "n": v["n"]}
                for m, v in g["metrics"].items() if v["n"]]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True)
    if a["changed_files"]:
        with st.expander(f"Changed and added files ({len(a['changed_files'])})"):
            st.text("\n".join(a["changed_files"]))


def glossary(eval_set: str) -> None:
    """One sentence for each word the numbers below depend on; the chosen set's first."""
    st.caption(f"**{eval_set}**: {SET_MEANING.get(eval_set, 'a held-out split')}")
    with st.expander("What base, tuned and each set mean"):
        st.markdown("\n".join([f"- **base**: {SIDES['base']}.", f"- **tuned**: {SIDES['tuned']}."]
                               + [f"- **{name}**: {meaning}" for name, meaning in SET_MEANING.items()
                                  if name != "val"]))


def warnings(health: dict) -> None:
    """Say what would make the table below mislead, before it: noise outputs, a base with random weights."""
    if health["random_weights"]:
        st.warning(f"The base model `{health['base_model']}` has random weights: it exists to test the plumbing, "
                   "so its outputs (and the tuned ones, a small adapter on top) are noise, and no score here says "
                   "what a model learned. Train on a real base (the `smol` preset on a CPU) for that.")
    degenerate = health["degenerate"]
    counts = {side: d for side, d in degenerate.items() if d["degenerate"]}
    if any(d["dominates"] for d in degenerate.values()):
        worst = [f"{side} {d['degenerate']} of {d['n']}" for side, d in degenerate.items() if d["dominates"]]
        st.warning("**Degenerate outputs dominate** (" + ", ".join(worst) + "): empty, non-text or looping answers. "
                   "The metrics below compare noise, and a difference between base and tuned means nothing.",
                   icon="⚠️")
    if counts:
        c = st.columns(len(counts))
        for col, (side, d) in zip(c, counts.items()):
            col.metric(f"Degenerate outputs ({side})", f"{d['degenerate']} of {d['n']}",
                       help="empty: nothing at all; non-text: replacement characters, backticks or punctuation "
                            "without words; repetition: the same few words over and over")
            col.caption(f"{d['empty']} empty · {d['non_text']} non-text · {d['repetition']} repetition")


def judge_status(judge: dict, eval_set: str, status: str) -> None:
    """The pairwise judge: its verdicts, or why there are none."""
    verdicts = (judge.get("sets") or {}).get(eval_set)
    if verdicts:
        st.plotly_chart(judge_bars(verdicts), key="judge")
        if verdicts.get("win_rate") is not None:
            lo, hi = verdicts.get("ci") or (None, None)
            st.caption(f"Judge ran: win rate {verdicts['win_rate']:.2f} (ties count half), 95% CI [{lo:.2f}, "
                       f"{hi:.2f}], judged by {judge.get('model')} in both orders")
    elif judge.get("skipped"):
        st.info(f"Judge skipped: {judge['skipped']}")
    elif judge.get("sets") is not None:
        st.info(f"Judge ran ({judge.get('model')}) but judged nothing in this set.")
    else:
        st.info("Judge: not run" + (" yet (the evaluation is still going)." if status in LIVE else
                                    " (this evaluation ended before it)."))


def learned(run_id: str) -> None:
    """The probe set in plain numbers, and three answers the base got wrong and the tuned model right."""
    learned_ = dt.eval_learned(run_id)
    k = learned_["summary"]
    pct = lambda x: "–" if x is None else f"{100 * x:.0f}%"
    st.subheader("What it learned")
    c = st.columns(3)
    c[0].metric("Right fact (tuned)", pct(k["tuned"]["fact_right"]), help=f"base {pct(k['base']['fact_right'])}; "
                f"of the {k['with_fact']} probes whose answer is one short fact")
    c[0].caption(f"base {pct(k['base']['fact_right'])}")
    c[1].metric("Real names used (tuned)", pct(k["tuned"]["real_names"]),
                help="answers naming at least one of the reference's repository names and inventing none")
    c[1].caption(f"base {pct(k['base']['real_names'])}")
    c[2].metric("Invented names (tuned)", pct(k["tuned"]["invented_names"]),
                help="answers naming something as the repository's that it does not have")
    c[2].caption(f"base {pct(k['base']['invented_names'])}")
    examples = learned_["examples"]
    if examples:
        with st.expander(f"{len(examples)} answers where the base was wrong and the tuned model right "
                         "(chosen by score)"):
            for r in examples:
                st.markdown(f"**Q:** {r['prompt'][-1]['content']}" + (f"  \n*fact:* `{r['fact']}`" if r.get("fact")
                                                                      else ""))
                cols = st.columns(2)
                cols[0].caption("Base")
                cols[0].text(r["base_output"][:1500])
                cols[1].caption("Tuned")
                cols[1].text(r["tuned_output"][:1500])


FILTERS = {"all": "all", "improved": "improved (ROUGE-L)", "regressed": "regressed (ROUGE-L)",
           "hallucination_fixed": "base hallucinated, tuned right"}


def side_by_side(run_id: str, eval_set: str) -> None:
    st.subheader("Side by side")
    first = dt.eval_view(run_id, eval_set, limit=0)
    c = st.columns(3)
    task = c[0].selectbox("Task", [""] + first["tasks"], key="eval-task", format_func=lambda t: t or "all")
    flip = c[1].selectbox("Show", list(FILTERS), key="eval-flip", format_func=FILTERS.get)
    flip = None if flip == "all" else flip
    page = st.session_state.get("eval-page", 1)
    view = dt.eval_view(run_id, eval_set, task=task or None, flip=flip, limit=PAGE_SIZE,
                        offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-view["total"] // PAGE_SIZE))
    if page > pages:
        page = st.session_state["eval-page"] = 1
        view = dt.eval_view(run_id, eval_set, task=task or None, flip=flip, limit=PAGE_SIZE)
    c[2].number_input(f"Page (of {pages}; {view['total']} rows)", 1, pages, key="eval-page")
    if not view["rows"]:
        st.info("No row matches these filters.")
    for r in view["rows"]:
        with st.container(border=True):
            st.markdown(f"**{r['sample_id']}** · {r['task'] or ''}" + (f" · judge: **{r['judge']}**"
                                                                        if r["judge"] else ""))
            long_text(prompt_text(r["prompt"]), "prompt")
            cols = st.columns(3)
            cols[0].caption("Reference" + (f" · fact `{r['fact']}`" if r.get("fact") else ""))
            long_text(r["reference"] or "", "reference", cols[0])
            details = r.get("details") or {}
            for col, side in ((cols[1], "base"), (cols[2], "tuned")):
                kind = r["degenerate"][side]
                col.caption(side.capitalize() + " " + _scores(r[f"{side}_scores"])
                            + (f" · **degenerate: {kind.replace('_', '-')}**" if kind else ""))
                long_text(r[f"{side}_output"] or "(empty output)", side, col)
                unknown = (details.get(side) or {}).get("unknown")
                if unknown:
                    col.caption("invented: " + ", ".join(f"`{n}`" for n in unknown[:8]))


PREVIEW_CHARS = 1200


def prompt_text(prompt) -> str:
    """A prompt as read: each turn of a conversation under its role (system, user, assistant)."""
    if not isinstance(prompt, list):
        return str(prompt)
    if len(prompt) == 1:
        return prompt[0].get("content", "")
    return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in prompt)


def long_text(text: str, what: str, where=st) -> None:
    """A text shown whole when short; otherwise its start, and all of it one click away."""
    if len(text) <= PREVIEW_CHARS:
        where.text(text)
        return
    where.text(text[:PREVIEW_CHARS] + " …")
    with where.expander(f"Whole {what} ({len(text):,} characters)"):
        st.text(text)


def _scores(scores: dict | None) -> str:
    return " · ".join(f"{k} {v:.3f}" for k, v in (scores or {}).items() if isinstance(v, (int, float)))


project = project_picker()
if project:
    with failures_shown("Loading the evaluation"):
        evaluation(project)
