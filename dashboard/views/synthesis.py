"""Synthesis: start a run from a form (the cost estimate comes first), watch it live, retry its dead letters.

The run is a detached Ray actor: closing or refreshing this page does not stop it. No API key is ever shown
or sent to the browser: the key stays in the environment of the process that started the dashboard.
"""

import pandas as pd
import streamlit as st

from backend.endpoint_config import FAILURE_CLASSES
from backend.synth_config import TASKS
from dashboard.common import LIVE, client, failures_shown, fmt_ts, project_picker, run_picker, status_label

st.title("Synthesis")
dt = client()


def config_form(project: str):
    """The form's settings as a SynthConfig, after an estimate; None until the estimate was asked for."""
    from backend.endpoint_config import EndpointConfig, api_key
    from backend.synth_config import SynthConfig

    defaults = SynthConfig()
    # outside the form, so choosing the offline generator disables the endpoint's fields at once
    c = st.columns(3)
    generator = c[0].selectbox("Generator", ["heuristic", "openai"], key="synth-generator",
                               help="openai: any OpenAI-compatible endpoint (DeepSeek V3 by default); "
                                    "heuristic: offline, no key, no endpoint")
    offline = generator == "heuristic"
    with st.form("synth-form"):
        c = st.columns(2)
        base_url = c[0].text_input("Base URL (openai)", defaults.endpoint.base_url, disabled=offline)
        model = c[1].text_input("Model (openai)", defaults.endpoint.model, disabled=offline)
        if offline:
            st.caption("The offline heuristic generator sends no request: it has no endpoint or model.")
        st.caption("API key: " + ("found in the dashboard's environment" if api_key() else
                                   "none set (DOCTUNE_API_KEY, DEEPSEEK_API_KEY or OPENAI_API_KEY); "
                                   "the heuristic generator needs none") + ". It is never shown here.")
        st.markdown("**Task mix** (relative weights)")
        w = st.columns(len(TASKS))
        mix = {t: w[i].number_input(t, 0.0, 10.0, float(defaults.task_mix[t]), 0.05, key=f"mix-{t}")
               for i, t in enumerate(TASKS)}
        c = st.columns(4)
        tasks_per_chunk = c[0].number_input("Tasks per chunk", 1, 5, defaults.tasks_per_chunk)
        samples_per_request = c[1].number_input("Samples per request", 1, 10, defaults.samples_per_request)
        max_chunks = c[2].number_input("Max chunks (0: all)", 0, 10_000_000, 0)
        language = c[3].selectbox("Language", ["en", "zh"])
        st.markdown("**Limits and budget**")
        c = st.columns(5)
        concurrency = c[0].number_input("Concurrency", 1, 512, defaults.endpoint.concurrency)
        rpm = c[1].number_input("Requests / minute", 1, 100_000, defaults.endpoint.rpm)
        tpm = c[2].number_input("Tokens / minute", 1, 100_000_000, defaults.endpoint.tpm)
        budget = c[3].number_input("Budget, USD (0: none)", 0.0, 100_000.0, 0.0, 0.5)
        target = c[4].number_input("Target samples (0: all)", 0, 10**9, 0,
                                   help="stop once this many samples passed validation, the files covered evenly")
        new_run = st.checkbox("Start a new run even if an unfinished one has these settings", False)
        submitted = st.form_submit_button("Estimate cost")
    if submitted:
        endpoint = EndpointConfig(concurrency=int(concurrency), rpm=int(rpm), tpm=int(tpm)) if offline else \
            EndpointConfig(base_url=base_url, model=model, concurrency=int(concurrency), rpm=int(rpm), tpm=int(tpm))
        cfg = SynthConfig(generator=generator, endpoint=endpoint, task_mix=mix, tasks_per_chunk=int(tasks_per_chunk),
                          samples_per_request=int(samples_per_request), max_chunks=int(max_chunks) or None,
                          language=language, max_cost_usd=float(budget) or None, target_samples=int(target) or None)
        with failures_shown("The estimate"):
            plan = dt.synth(project, cfg, dry_run=True, new_run=new_run)
            st.session_state["synth-plan"] = {"project": project, "cfg": cfg, "plan": plan, "new_run": new_run}
    return st.session_state.get("synth-plan")


def estimate_and_start(project: str, pending: dict | None) -> None:
    if not pending or pending["project"] != project:
        return
    plan, est = pending["plan"], pending["plan"]["estimate"]
    st.subheader("Estimate")
    c = st.columns(5)
    c[0].metric("Requests", f"{est.get('requests', 0):,}")
    c[1].metric("Tokens in (est.)", f"{est.get('tokens_in', 0):,}")
    c[2].metric("Tokens out (est.)", f"{est.get('tokens_out', 0):,}")
    cost = est.get("cost_usd")
    c[3].metric("Cost (est.)", f"${cost:.4f}" if cost is not None else "n/a",
                help=None if cost is not None else "unknown: no price for this model (below)")
    c[4].metric("Done before / cached", f"{plan['done_before']} / {plan['cached']}")
    if cost is None:
        st.info(UNPRICED.format(model=pending["cfg"].endpoint.model))
    if plan["resuming"]:
        st.caption(f"Resumes run {plan['run_id']}: what it finished is not asked for again.")
    if st.button("Start synthesis", type="primary", key="start-synth"):
        with failures_shown("Starting the run"):
            started = dt.synth(project, pending["cfg"], new_run=pending["new_run"], wait=False)
            st.session_state["synth-run"] = started["run_id"]
            st.query_params.pop("run", None)  # the new run is the one to watch, not a linked one
            st.session_state.pop("synth-plan", None)
            st.success(f"Started {started['run_id']}; it goes on if you leave this page.")


def limiter_chart(run_id: str) -> None:
    """Why a run is slow: answers per minute by outcome, stalls, the in-flight cap and requests in flight over time."""
    points = dt.limiter_timeline(run_id)
    if len(points) < 2:
        return
    from plotly.subplots import make_subplots

    df = pd.DataFrame(points).fillna(0)
    minutes = df["t"] / 60
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Answers per minute", "Requests in flight"))
    for col, name in (("ok_per_min", "ok"), ("rate_limited_per_min", "429"), ("errors_per_min", "errors"),
                      ("rate_rpm", "allowed rate")):
        fig.add_scatter(x=minutes, y=df[col], name=name, mode="lines", row=1, col=1,
                        line={"dash": "dot"} if col == "rate_rpm" else None)
    stalls = df[df["stalls"] > 0]
    fig.add_scatter(x=stalls["t"] / 60, y=stalls["stalls"], name="stalls", mode="markers", row=1, col=1)
    fig.add_scatter(x=minutes, y=df["cap"], name="in-flight cap", mode="lines", line_shape="hv", row=2, col=1)
    fig.add_scatter(x=minutes, y=df["in_flight"], name="in flight", mode="lines", row=2, col=1)
    fig.update_layout(height=380, margin={"t": 30, "b": 10}, legend={"orientation": "h"})
    fig.update_xaxes(title_text="minutes", row=2, col=1)
    st.plotly_chart(fig, key=f"limiter-{run_id}")


UNPRICED = ("No price for model `{model}`: its cost is not counted, so the dollars shown are not what you pay, and "
            "a budget cannot apply. Add the model's price per million tokens to data/prices.yaml (or "
            "synth.endpoint.prices) to have both.")
# a run in one of these has work left that rerunning its settings goes on with (a comment: a bare string on a
# page would be drawn by Streamlit's magic)
ENDED = ("cancelled", "failed", "interrupted", "budget_stopped")


def live_progress(run_id: str) -> None:
    p = dt.synth_progress(run_id)
    live = p["status"] in LIVE
    first = [p]  # the first draw shows the read above; the fragment's own reruns (every 2 s) read afresh

    @st.fragment(run_every=2 if live else None)
    def panel():
        with failures_shown("Loading the run's progress"):
            q = first.pop() if first else dt.synth_progress(run_id)
            figures(q)
            failure_breakdown(q)
            cost_note(q)
            limiter_chart(run_id)
            if q["error"]:
                st.error(q["error"])
            if q["dataset"]:
                st.success(f"Curated into dataset version {q['dataset']}.")
            run_actions(q)
            if live and q["status"] not in LIVE:
                st.rerun()  # the run ended: redraw the page once (dead letters, no more refreshing)

    panel()
    dead_letter_panel(run_id, p)


def figures(q: dict) -> None:
    """The run's headline numbers; requests per minute only while it runs (an ended run sends none)."""
    live = q["status"] in LIVE
    units = q["units"] or 0
    st.markdown(f"**{q['run_id']}** — {status_label(q['status'])}, started {fmt_ts(q['created_at'])}"
                + (f", finished {fmt_ts(q['finished_at'])}" if q["finished_at"] else ""))
    if units:
        st.progress(min(1.0, q["units_done"] / units), text=f"{q['units_done']:,} of {units:,} units")
    failed = sum(n for k, n in q["failures"].items() if k != "http_429")
    tiles = [("Samples", f"{q['samples']:,}", None),
             ("Requests", f"{q['requests']:,}", "HTTP attempts, failed ones included"),
             ("Failed requests", f"{failed:,}", "attempts that failed (5xx, timeouts, unparseable answers, …); "
                                                "most are retried, see below"),
             ("429s", f"{q['http_429']:,}", FAILURE_CLASSES["http_429"][1]),
             ("Dead letters", f"{q['dead_letters']:,}", "units that kept failing after every retry"),
             ("Tokens", f"{q['tokens_in'] + q['tokens_out']:,}", None),
             ("Cost", f"${q['cost_usd']:.4f}" if q["priced"] else "n/a",
              None if q["priced"] else "unknown: no price for this model (below)")]
    if live:
        tiles.insert(2, ("Requests / min", f"{q['requests_last_minute']:,}", "in the last 60 seconds"))
    for col, (label, value, help_) in zip(st.columns(len(tiles)), tiles):
        col.metric(label, value, help=help_)


def failure_breakdown(q: dict) -> None:
    """Failed attempts and dead letters by class, each with what it means."""
    def line(counts: dict) -> str:
        return " · ".join(f"{FAILURE_CLASSES.get(k, (k, ''))[0]} **{n}**" for k, n in counts.items())

    if q["failures"]:
        st.markdown(f"Failed attempts by class: {line(q['failures'])} (of {q['requests']:,} requests)",
                    help="\n".join(f"- **{FAILURE_CLASSES.get(k, (k, ''))[0]}**: {FAILURE_CLASSES.get(k, ('', k))[1]}"
                                   for k in q["failures"]))
    if q["dead_reasons"]:
        st.markdown(f"Dead letters by reason: {line(q['dead_reasons'])}")


def cost_note(q: dict) -> None:
    if not q["priced"]:
        st.info(UNPRICED.format(model=q["model"]))
    elif q["budget_usd"] is not None:
        st.caption(f"Budget ${q['budget_usd']:.2f}: the run stops before its cost would pass it.")


def run_actions(q: dict) -> None:
    """Cancel a live run, resume an ended one; what was done stays said across the page's refreshes."""
    run_id, said = q["run_id"], f"synth-said-{q['run_id']}"
    if q["status"] in LIVE and st.button("Cancel run", key=f"cancel-{run_id}"):
        with failures_shown("Cancelling"):
            st.session_state[said] = dt.cancel(run_id)
    if q["status"] in ENDED and st.button("Resume run", key=f"resume-{run_id}",
                                          help="goes on where it stopped: what it finished is not asked for again"):
        with failures_shown("Resuming"):
            started = dt.resume_synth(run_id)
            st.session_state[said] = f"Resumed {started['run_id']}: {started['units'] - started['done_before']:,} " \
                                     "units left."
            st.rerun()
    if st.session_state.get(said):
        st.info(st.session_state[said])


DEAD_COLUMNS = {
    "file": st.column_config.TextColumn("file", help="the chunk's file and line range"),
    "task": st.column_config.TextColumn("task", help="the task type asked of the chunk"),
    "reason": st.column_config.TextColumn("reason", help="the class of the last failed attempt"),
    "what it means": st.column_config.TextColumn("what it means", width="large"),
    "attempts": st.column_config.NumberColumn("attempts", help="HTTP attempts made for this unit; 0 for the offline "
                                                               "heuristic, which sends no request"),
    "detail": st.column_config.TextColumn("detail", help="the last error, as the endpoint or generator gave it"),
}


def dead_letter_panel(run_id: str, p: dict) -> None:
    """The run's dead letters, explained, and their retry: what it will do first, what it did after."""
    dead = dt.dead_letters(run_id=run_id)
    said = f"synth-retry-said-{run_id}"
    if p["retries"]:
        r = p["retries"][-1]
        st.caption(f"Last retry of dead letters: {r['units']} units, {r['done']} done, {r['failed']} failed again "
                   f"({r['status']}). The run's own finish time is unchanged.")
    if st.session_state.get(said):
        st.success(st.session_state[said])
    if not dead:
        return
    st.subheader(f"Dead letters ({len(dead)})")
    st.dataframe(pd.DataFrame([{
        "file": f"{d['path']}:{d['start_line']}-{d['end_line']}" if d.get("path") else f"chunk {d['chunk_id']}",
        "task": d["task"], "reason": FAILURE_CLASSES.get(d["reason"], (d["reason"],))[0],
        "what it means": FAILURE_CLASSES.get(d["reason"], ("", ""))[1], "attempts": d["attempts"],
        "detail": d["detail"]} for d in dead]), hide_index=True, column_config=DEAD_COLUMNS)
    if p["status"] in LIVE:
        return
    plan = dt.retry_plan(run_id)
    reasons = ", ".join(f"{FAILURE_CLASSES.get(k, (k,))[0]} {n}" for k, n in plan["reasons"].items())
    st.markdown(f"**Retry** asks again for these {plan['dead_letters']} units ({reasons}) with the run's own "
                f"generator, `{plan['generator']}`; they go into a new dataset version.")
    if plan["futile"]:
        st.warning(f"{plan['futile']} of them are `no samples` of the offline heuristic: retrying them with it "
                   "fails again. Ask an LLM endpoint for those chunks instead (a new run of just them).")
        retry_with_llm(run_id, plan)
    if plan["futile"] < plan["dead_letters"] and st.button("Retry dead letters", key=f"retry-{run_id}"):
        with failures_shown("Retrying"):
            dt.retry_dead_letters(run_id)
            st.session_state[said] = f"Retrying {plan['dead_letters']} dead letters of {run_id}; its figures " \
                                     "update below as they finish."
            st.rerun()


def retry_with_llm(run_id: str, plan: dict) -> None:
    from backend.endpoint_config import EndpointConfig

    defaults = EndpointConfig()
    with st.form(f"retry-llm-{run_id}"):
        c = st.columns(2)
        base_url = c[0].text_input("Base URL", defaults.base_url, key=f"retry-url-{run_id}")
        model = c[1].text_input("Model", defaults.model, key=f"retry-model-{run_id}")
        go = st.form_submit_button("Retry with the LLM generator")
    if go:
        with failures_shown("Retrying with the LLM generator"):
            started = dt.retry_dead_letters(run_id, endpoint=EndpointConfig(base_url=base_url, model=model))
            st.session_state["synth-run"] = started["run_id"]  # the page shows the new run, and says why
            st.query_params.pop("run", None)
            st.session_state[f"synth-said-{started['run_id']}"] = (
                f"Started to cover the {plan['futile']} dead letters of {run_id}: {model} is asked for their chunks; "
                f"each dead letter it covers is resolved there.")
            st.rerun()


project = project_picker()
if project:
    with failures_shown("The synthesis form"):
        st.header("New run")
        estimate_and_start(project, config_form(project))
    with failures_shown("Loading runs"):
        st.header("Runs")
        runs = [r for r in dt.runs(project) if r["kind"] == "synth"]
        if not runs:
            st.info("No synthesis run yet for this project.")
        else:
            live_progress(run_picker(runs, "synth-run")["run_id"])
