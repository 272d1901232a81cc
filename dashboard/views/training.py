"""Training: start a run from a preset with editable fields, see the queue, watch curves and resources live,
cancel (a checkpoint is saved first) and resume. Each run is a detached Ray actor holding the GPU; a second
run queues until it is free. Leaving this page stops nothing."""

import pandas as pd
import streamlit as st

from dashboard.common import (LIVE, client, curves, failures_shown, fmt_ts, project_picker, run_picker, status_label,
                              version_picker)

st.title("Training")
dt = client()
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
            st.success(f"Queued {started['run_id']} on {version}; it goes on if you leave this page.")


def queue(runs: list[dict]) -> None:
    live = [r for r in runs if r["status"] in LIVE]
    if live:
        st.dataframe(pd.DataFrame([{"run": r["run_id"], "status": status_label(r["status"]),
                                    "since": fmt_ts(r["created_at"])} for r in live]), hide_index=True)
    else:
        st.caption("Nothing queued or running.")


def watch(run: dict) -> None:
    run_id = run["run_id"]

    @st.fragment(run_every=2 if run["status"] in LIVE else None)
    def panel():
        with failures_shown("Loading the run"):
            figures()

    def figures():
        now = next((r for r in dt.runs(run["project"]) if r["run_id"] == run_id), run)
        s = now["summary"] or {}
        st.markdown(f"**{run_id}** — {status_label(now['status'])}")
        c = st.columns(5)
        c[0].metric("Step", s.get("global_step", "–"))
        c[1].metric("Eval loss", f"{s['eval_loss']:.4f}" if s.get("eval_loss") is not None else "–")
        c[2].metric("Tokens / s", f"{s['tokens_per_second']:.0f}" if s.get("tokens_per_second") else "–")
        c[3].metric("Peak GPU MB", f"{s['peak_gpu_mb']:.0f}" if s.get("peak_gpu_mb") else "–")
        c[4].metric("Seconds", s.get("seconds", "–"))
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
        if now["status"] in LIVE and b[0].button("Cancel (checkpoint first)", key=f"cancel-{run_id}"):
            with failures_shown("Cancelling"):
                st.info(dt.cancel(run_id))
        if now["status"] in {"cancelled", "failed", "interrupted"} and b[1].button("Resume", key=f"resume-{run_id}"):
            with failures_shown("Resuming"):
                dt.train(None, resume_run=run_id, wait=False)
                st.rerun()
        if now["status"] != run["status"] and now["status"] not in LIVE:
            st.rerun()

    panel()
    with st.expander("Events"):
        st.dataframe(pd.DataFrame([{"event": e["kind"], "at": fmt_ts(e["ts"]), "detail": str(e["detail"])}
                                   for e in dt.run_events(run_id)]), hide_index=True)


project = project_picker()
if project:
    with failures_shown("The training form"):
        st.header("New run")
        start_form(project)
    with failures_shown("Loading runs"):
        runs = [r for r in dt.runs(project) if r["kind"] == "train"]
        st.header("Queue")
        queue(runs)
        st.header("Runs")
        if not runs:
            st.info("No training run yet for this project.")
        else:
            watch(run_picker(runs, "train-run"))
