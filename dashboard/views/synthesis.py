"""Synthesis: start a run from a form (the cost estimate comes first), watch it live, retry its dead letters.

The run is a detached Ray actor: closing or refreshing this page does not stop it. No API key is ever shown
or sent to the browser: the key stays in the environment of the process that started the dashboard.
"""

import pandas as pd
import streamlit as st

from backend.synth_config import TASKS
from dashboard.common import LIVE, client, failures_shown, fmt_ts, project_picker, run_picker, status_label

st.title("Synthesis")
dt = client()


def config_form(project: str):
    """The form's settings as a SynthConfig, after an estimate; None until the estimate was asked for."""
    from backend.endpoint_config import EndpointConfig, api_key
    from backend.synth_config import SynthConfig

    defaults = SynthConfig()
    with st.form("synth-form"):
        c = st.columns(3)
        generator = c[0].selectbox("Generator", ["heuristic", "openai"],
                                   help="openai: any OpenAI-compatible endpoint (DeepSeek V3 by default); "
                                        "heuristic: offline, no key")
        base_url = c[1].text_input("Base URL (openai)", defaults.endpoint.base_url)
        model = c[2].text_input("Model (openai)", defaults.endpoint.model)
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
        endpoint = EndpointConfig(base_url=base_url, model=model, concurrency=int(concurrency), rpm=int(rpm),
                                  tpm=int(tpm))
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
    c[3].metric("Cost (est.)", f"${cost:.4f}" if cost is not None else "no price for this model")
    c[4].metric("Done before / cached", f"{plan['done_before']} / {plan['cached']}")
    if plan["resuming"]:
        st.caption(f"Resumes run {plan['run_id']}: what it finished is not asked for again.")
    if st.button("Start synthesis", type="primary", key="start-synth"):
        with failures_shown("Starting the run"):
            started = dt.synth(project, pending["cfg"], new_run=pending["new_run"], wait=False)
            st.session_state["synth-run"] = started["run_id"]
            st.session_state.pop("synth-plan", None)
            st.success(f"Started {started['run_id']}; it goes on if you leave this page.")


def live_progress(run_id: str) -> None:
    p = dt.synth_progress(run_id)
    live = p["status"] in LIVE

    @st.fragment(run_every=2 if live else None)
    def panel():
        with failures_shown("Loading the run's progress"):
            figures()

    def figures():
        q = dt.synth_progress(run_id)
        units = q["units"] or 0
        st.markdown(f"**{run_id}** — {status_label(q['status'])}, started {fmt_ts(q['created_at'])}")
        if units:
            st.progress(min(1.0, q["units_done"] / units), text=f"{q['units_done']:,} of {units:,} units")
        c = st.columns(7)
        c[0].metric("Samples", f"{q['samples']:,}")
        c[1].metric("Failed", q["dead_letters"])
        c[2].metric("Requests / min", q["requests_last_minute"])
        c[3].metric("Requests", f"{q['requests']:,}")
        c[4].metric("429s", q["http_429"])
        c[5].metric("Tokens", f"{q['tokens_in'] + q['tokens_out']:,}")
        c[6].metric("Cost", f"${q['cost_usd']:.4f}")
        if q["error"]:
            st.error(q["error"])
        if q["dataset"]:
            st.success(f"Curated into dataset version {q['dataset']}.")
        if q["status"] in LIVE and st.button("Cancel run", key=f"cancel-{run_id}"):
            with failures_shown("Cancelling"):
                st.info(dt.cancel(run_id))
        if live and q["status"] not in LIVE:
            st.rerun()  # the run ended: redraw the page once (dead letters, no more refreshing)

    panel()
    dead = dt.dead_letters(run_id=run_id)
    if dead:
        st.subheader(f"Dead letters ({len(dead)})")
        st.dataframe(pd.DataFrame([{k: d[k] for k in ("chunk_id", "task", "reason", "detail", "attempts")}
                                   for d in dead]), hide_index=True)
        if p["status"] not in LIVE and st.button("Retry dead letters", key=f"retry-{run_id}"):
            with failures_shown("Retrying"):
                dt.retry_dead_letters(run_id)
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
