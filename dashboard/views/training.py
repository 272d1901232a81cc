"""Training: start a run from a preset with editable fields, see the queue, watch step x of N, curves and resources
live, cancel (a checkpoint is saved first) and resume; then evaluate a finished run, export its dataset version
and download it, merge its adapter. Each run is a detached Ray actor (training holds the GPU; a second run queues
until it is free). Leaving this page stops nothing."""

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.common import (LIVE, client, curves, failures_shown, fmt_ts, project_picker, run_picker, status_label,
                              version_picker)

st.title("Training")
dt = client()
PICKED = "train-run-picked"  # the run picker's own key: its choice survives the panel's refreshes
SHOWN = "train-run-shown"  # the run the panel shows, and so the one whose next steps the page shows
CURVES = ["loss", "eval_loss", "learning_rate", "grad_norm"]
RESOURCES = ["gpu_mem_allocated_mb", "gpu_mem_reserved_mb", "gpu_util_percent", "cpu_percent", "rss_mb"]
FIELDS = [  # (section, field, label, step) the form lets you change; the rest comes from the preset
    ("model", "max_seq_length", "Max sequence length", 64),
    ("lora", "r", "LoRA rank r", 1), ("lora", "alpha", "LoRA alpha", 1),
    ("training", "learning_rate", "Learning rate", 1e-5), ("training", "num_train_epochs", "Epochs", 1),
    ("training", "max_steps", "Max steps (-1: epochs decide)", 1),
    ("training", "per_device_train_batch_size", "Batch per device", 1),
    ("training", "gradient_accumulation_steps", "Gradient accumulation", 1),
    ("training", "weight_decay", "Weight decay", 0.01), ("training", "eval_steps", "Eval every N steps", 1),
    ("training", "save_steps", "Checkpoint every N steps", 1),
]


def start_form(project: str) -> None:
    from backend.train_config import load_preset

    versions = [v["version"] for v in dt.datasets(project)]
    if not versions:
        st.info("No dataset version to train on yet: run a synthesis first.")
        return
    c = st.columns(2)
    presets = dt.presets()
    default = "seed" if dt.cluster_has_gpu() else "smol"
    preset = c[0].selectbox("Preset", presets, index=presets.index(default) if default in presets else 0,
                            help="seed: Qwen2.5-3B in 4-bit, LoRA r=16 (needs a GPU); smol: SmolLM2-135M-Instruct, "
                                 "a real model that trains on a CPU; tiny: 2 layers, random weights (plumbing tests)")
    version = version_picker(dt, project, key="train-version", where=c[1])  # the current one by default
    cfg = load_preset(preset)
    with st.form(f"train-form-{preset}"):
        st.caption(f"Model: {cfg.model.name_or_path} · engine {cfg.engine} · "
                   f"{'4-bit' if cfg.model.load_in_4bit else cfg.model.dtype}")
        cols = st.columns(4)
        values = {}
        for i, (section, name, label, step) in enumerate(FIELDS):
            current = getattr(getattr(cfg, section), name)
            values[(section, name)] = cols[i % 4].number_input(
                label, value=current, step=type(current)(step), format="%g" if isinstance(current, float) else None,
                key=f"{preset}-{section}-{name}")
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        for (section, name), value in values.items():
            setattr(getattr(cfg, section), name, value)
        with failures_shown("Starting the run"):
            started = dt.train(project, cfg, version=version, wait=False)
            st.session_state["train-run"] = started["run_id"]
            st.session_state.pop(PICKED, None)  # the picker shows the run just started
            st.session_state["train-started"] = f"Queued {started['run_id']} on {version}; it goes on if you leave " \
                                                f"this page."
    if "train-started" in st.session_state:  # kept across the reruns that follow the start
        st.success(st.session_state["train-started"])


def queue(runs: list[dict]) -> None:
    live = [r for r in runs if r["status"] in LIVE]
    if live:
        st.dataframe(pd.DataFrame([{"run": r["run_id"], "status": status_label(r["status"]),
                                    "since": fmt_ts(r["created_at"])} for r in live]), hide_index=True)
    else:
        st.caption("Nothing queued or running.")


def live_runs(project: str) -> None:
    """The queue and the chosen run's panel, read together from one list of runs, so they show one status;
    refreshed every 2 s while a run is queued or running."""
    live = any(r["status"] in LIVE for r in train_runs(project))

    @st.fragment(run_every=2 if live else None)
    def section():
        with failures_shown("Loading runs"):
            runs = train_runs(project)
            st.header("Queue")
            queue(runs)
            st.header("Runs")
            if not runs:
                st.info("No training run yet for this project.")
                return
            run = run_picker(runs, "train-run", key=PICKED)
            panel(run)
            shown, st.session_state[SHOWN] = st.session_state.get(SHOWN), run["run_id"]
            if any(r["status"] in LIVE for r in runs) != live or shown not in {None, run["run_id"]}:
                st.rerun()  # a run started or ended, or another was picked: the whole page follows (next steps)

    section()


def train_runs(project: str) -> list[dict]:
    return [r for r in dt.runs(project) if r["kind"] == "train"]


def panel(run: dict) -> None:
    run_id = run["run_id"]
    p = dt.train_progress(run_id)
    st.markdown(f"**{run_id}** — {status_label(run['status'])}")  # as the queue and the picker say
    if p["parent_run"]:
        st.caption(f"Continues run {p['parent_run']}'s adapter, on dataset version {p['dataset']}.")
    if p["max_steps"]:
        done = min((p["step"] or 0) / p["max_steps"], 1.0)
        left = f" · about {fmt_seconds(p['seconds_left'])} left" if p["seconds_left"] is not None else ""
        st.progress(done, text=f"Step {p['step'] or 0} of {p['max_steps']}{left}")
    c = st.columns(5)
    c[0].metric("Step", p["step"] if p["step"] is not None else "–")
    c[1].metric("Eval loss", f"{p['eval_loss']:.4f}" if p["eval_loss"] is not None else "–")
    c[2].metric("Tokens / s", f"{p['tokens_per_second']:.0f}" if p["tokens_per_second"] else "–")
    peak = (run["summary"] or {}).get("peak_gpu_mb")
    c[3].metric("Peak GPU MB", f"{peak:.0f}" if peak else "–")
    c[4].metric("Seconds", f"{p['seconds']:.0f}" if p["seconds"] is not None else "–",
                help="the whole run: the time before a resume counts too")
    names = set(dt.metric_names([run_id]))
    fig = curves(dt.metric_series([run_id], [n for n in CURVES if n in names]), "Training curves", order=CURVES)
    if fig is None:
        st.info("No metrics yet: they appear after the first logged step.")
    else:
        st.plotly_chart(fig, key=f"curves-{run_id}")
    res = [n for n in RESOURCES if n in names]
    if res:
        st.plotly_chart(curves(dt.metric_series([run_id], res), "Resources", order=RESOURCES), key=f"res-{run_id}")
    b = st.columns(4)
    if run["status"] in LIVE and b[0].button("Cancel (checkpoint first)", key=f"cancel-{run_id}"):
        with failures_shown("Cancelling"):
            st.session_state["train-note"] = f"{run_id}: {dt.cancel(run_id)}"
    if run["status"] in {"cancelled", "failed", "interrupted"} and b[1].button("Resume", key=f"resume-{run_id}"):
        with failures_shown("Resuming"):
            dt.train(None, resume_run=run_id, wait=False)
            st.rerun()
    if st.session_state.get("train-note", "").startswith(run_id):
        st.info(st.session_state["train-note"])  # kept across the panel's refreshes
    with st.expander("Events"):
        st.dataframe(pd.DataFrame([{"event": e["kind"], "at": fmt_ts(e["ts"]), "detail": str(e["detail"])}
                                   for e in dt.run_events(run_id)]), hide_index=True)


def fmt_seconds(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def next_steps(run: dict) -> None:
    """What a finished run leads to: evaluate it, export its dataset version, merge its adapter. Each is a run
    (or a folder) that outlives this page; each shows the command that does the same."""
    run_id, project, version = run["run_id"], run["project"], dt.run(run["run_id"])["config"]["dataset"]
    st.header("Next steps")
    st.caption(f"For {run_id}, trained on dataset version {version}.")
    tabs = st.tabs(["Evaluate", "Export & download", "Merge", "Continue"])
    with tabs[0], failures_shown("Starting the evaluation"):
        evaluate_form(run_id)
    with tabs[1], failures_shown("The export"):
        export_form(project, version)
    with tabs[2], failures_shown("Starting the merge"):
        merge_form(run_id)
    with tabs[3], failures_shown("Starting the continued run"):
        continue_form(run_id, project, version)
    follow_ups(run_id)


def continue_form(run_id: str, project: str, version: str) -> None:
    """A new run from this run's adapter on the project's current version (after a refresh, say)."""
    current = dt.current_dataset(project)
    st.code(f"doctune train --from {run_id}", language="bash")
    st.caption(f"Trains this adapter further on the current dataset version ({current}), with this run's settings; "
               f"the new run records this one as its parent, and its evaluation compares the two adapters on the "
               f"files that changed and on those that did not.")
    if current == version:
        st.info(f"The current version is the one this run trained on ({version}): continuing it would train on the "
                f"same samples again.")
    if st.button("Continue this adapter", key=f"continue-{run_id}"):
        started = dt.train_from(run_id, wait=False)
        st.success(f"Started {started['run_id']} on {started['dataset']}; it goes on if you leave this page.")


def evaluate_form(run_id: str) -> None:
    from backend.endpoint_config import EndpointConfig, api_key
    from backend.eval_config import EvalConfig

    defaults = EvalConfig()
    with st.form(f"eval-form-{run_id}"):
        c = st.columns(4)
        split = c[0].text_input("Held-out split", defaults.split)
        limit = c[1].number_input("Prompts per set (0: all)", 0, 10_000, 0, key="eval-limit")
        max_new = c[2].number_input("Max new tokens", 1, 4096, defaults.max_new_tokens, key="eval-max-new")
        batch = c[3].number_input("Batch size", 1, 512, defaults.batch_size, key="eval-batch")
        c = st.columns([1, 2, 2])
        judge = c[0].checkbox("Judge with an LLM", value=api_key() is not None,
                              help="a pairwise judge of every (base, tuned) pair, in both orders")
        base_url = c[1].text_input("Judge base URL", defaults.endpoint.base_url)
        model = c[2].text_input("Judge model", defaults.endpoint.model)
        st.caption("API key: " + ("found in the dashboard's environment" if api_key() else
                                  "none in the dashboard's environment (a local endpoint may need none)"))
        submitted = st.form_submit_button("Evaluate", type="primary")
    cfg = EvalConfig(split=split, limit=int(limit) or None, max_new_tokens=int(max_new), batch_size=int(batch),
                     judge=judge, endpoint=EndpointConfig(base_url=base_url, model=model))
    st.code(eval_command(run_id, cfg), language="bash")
    if submitted:
        started = dt.evaluate(run_id, cfg, wait=False)
        st.success(f"Started {started['run_id']}; it goes on if you leave this page. Its results open on the "
                   "Evaluation page.")


def eval_command(run_id: str, cfg) -> str:
    parts = [f"doctune eval --run {run_id}"]
    defaults = type(cfg)()
    if cfg.split != defaults.split:
        parts.append(f"--split {cfg.split}")
    if cfg.limit:
        parts.append(f"--limit {cfg.limit}")
    if cfg.max_new_tokens != defaults.max_new_tokens:
        parts.append(f"--max-new-tokens {cfg.max_new_tokens}")
    if cfg.batch_size != defaults.batch_size:
        parts.append(f"--batch-size {cfg.batch_size}")
    if cfg.judge:
        parts.append(f"--judge --base-url {cfg.endpoint.base_url} --model {cfg.endpoint.model}")
    return " ".join(parts)


def export_form(project: str, version: str) -> None:
    from backend.export_config import FORMATS, ExportConfig

    fmt = st.selectbox("Format", FORMATS, key="export-format")
    st.code(f"doctune export --project {project} --dataset {version} --format {fmt} --out DIR", language="bash")
    key = f"export-{project}-{version}-{fmt}"
    if st.button(f"Export {version} as {fmt}", key=f"{key}-go"):
        st.session_state[key] = dt.export_archive(project, ExportConfig(format=fmt), version=version)
    done = st.session_state.get(key)
    if done:
        st.caption(f"Written to {done['folder']}: {len(done['files'])} files.")
        st.download_button(f"Download {Path(done['archive']).name}", Path(done["archive"]).read_bytes(),
                           file_name=Path(done["archive"]).name, mime="application/zip", key=f"{key}-download")


def merge_form(run_id: str) -> None:
    dtype = st.radio("Precision", ["bf16", "fp16", "fp32"], horizontal=True, key="merge-dtype")
    st.code(f"doctune merge {run_id} --dtype {dtype}", language="bash")
    st.caption("Merges the adapter into its base model, in a run of its own (on the GPU where there is one); "
               f"the folder is `runs/{run_id}/merged-{dtype}` in the home.")
    if st.button("Merge", key=f"merge-{run_id}"):
        started = dt.merge(run_id, dtype=dtype, wait=False)
        st.success(f"Started {started['run_id']}; it goes on if you leave this page.")


def follow_ups(run_id: str) -> None:
    """The evaluations and merges of this run, refreshed while one is going."""
    live = any(r["status"] in LIVE for r in dt.follow_up_runs(run_id))

    @st.fragment(run_every=2 if live else None)
    def table():
        with failures_shown("Loading the evaluations and merges"):
            rows = dt.follow_up_runs(run_id)
            if not rows:
                return
            st.subheader("Evaluations and merges of this run")
            for r in rows:  # a few lines, each with its result: text a reader (and a test) can find
                result = follow_up_result(r)
                st.markdown(f"- `{r['run_id']}` {KIND_NAMES[r['kind']]}, **{status_label(r['status'])}**, "
                            f"started {fmt_ts(r['created_at'])}" + (f" — {result}" if result else ""))
            if any(r["kind"] == "eval" and r["status"] == "completed" for r in rows):
                st.page_link("views/evaluation.py", label="Open the Evaluation page", icon=":material/balance:")
            if any(r["status"] in LIVE for r in rows) != live:
                st.rerun()

    table()


KIND_NAMES = {"eval": "evaluation", "merge": "merge"}


def follow_up_result(r: dict) -> str:
    s = r["summary"] or {}
    if r["error"]:
        return r["error"][:200]
    if r["kind"] == "merge":
        return f"merged into `{s['merged']}`" if s.get("merged") else ""
    split = s.get("split", "test")
    rouge = ((s.get(split) or {}).get("metrics") or {}).get("rouge_l") or {}
    judge = s.get("judge") or {}
    parts = [f"ROUGE-L tuned {rouge['tuned']:.3f} (Δ {rouge['delta']:+.3f})"] if rouge.get("tuned") is not None else []
    if (judge.get("sets") or {}).get(split):
        parts.append(f"judge win rate {judge['sets'][split]['win_rate']:.2f}")
    elif judge.get("skipped"):
        parts.append("judge skipped")
    return ", ".join(parts)


project = project_picker()
if project:
    with failures_shown("The training form"):
        st.header("New run")
        start_form(project)
    live_runs(project)
    with failures_shown("Next steps"):
        picked = next((r for r in train_runs(project) if r["run_id"] == st.session_state.get(SHOWN)), None)
        if picked is not None and picked["status"] == "completed":
            next_steps(picked)
