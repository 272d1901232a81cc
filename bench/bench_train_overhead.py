"""Training overhead on the CPU: DocTune's run actor, with all its metrics, against a bare TRL loop.

Both variants train the same tiny model (`backend.tiny_model`, built into a temp DocTune home) on the same
rows (--rows synthetic Q&A rows, one in eight in the val split, seeded into the home as a dataset version
and read back from the store in the store's order), at the `tiny` preset with a fixed --max-steps:

  bare     in this process: `build_hf_model` (peft LoRA from the same config), TRL's `SFTTrainer` with the
           same `SFTConfig` (`backend.train._sft_config`, report_to none), no DocTune callback, no
           TensorBoard, and without transformers' PrinterCallback (DocTune removes it too; it only prints)
  doctune  `DocTune(home).train(project, cfg)`: the detached `TrainRun` Ray actor with `num_cpus=1`,
           the store sink (metrics batched to the store actor), TensorBoard, psutil resource metrics
           every step, cancellation checks, the adapter saved at the end

Same work in both: eval_steps and save_steps are set to --eval-save-steps in both (default max_steps + 1,
so no evaluation runs inside the loop and the only checkpoint is the one transformers writes at the last
step, in both). Both use `_let_trl_run_on_cpu()` (TRL 1.15's fused loss has no CPU kernel otherwise).

Threads and priority. Ray starts the actor's worker with OMP_NUM_THREADS set to its `num_cpus` (1), so
torch trains there on 1 intra-op thread while this process would use every core; and the raylet starts
every worker at niceness 15 (Ray's `worker_niceness`), so on a machine busy with anything else the actor
gets a smaller share of the CPU than a process at niceness 0. Neither is DocTune's callbacks, so the bare
variant runs with the actor's thread count (`torch.set_num_threads`) and niceness (`os.nice`, on this
process, after setup), both read from a probe actor with the same resources. --bare-threads 0 and
--bare-nice 0 leave this process's defaults instead, to see what the pinning costs. The process CPU% of
each (doctune: its `cpu_percent` metric; bare: CPU time over wall time) is printed as a check that they
really ran on the same number of cores.

Figures (each variant runs --reps times, alternating bare, doctune, bare, doctune; the best of each is used,
and the median of the per-repetition ratios is printed as a check on noise):
  train_s    the trainer's own `train_runtime` (its training loop, the final checkpoint included) — the
             bare trainer's return value, and the `train_runtime` metric the actor logged to the store.
             The overhead ratio doctune/bare and the target (<= 1.10) use this.
  tokens/s   non-padding tokens trained on (TRL's `num_tokens`, equal in both) / train_s
  steady     median tokens/s between consecutive training logs (every step), leaving out the first
             --skip-steps (doctune: its `tokens_per_second` metric; bare: the same formula, from a callback
             that only reads the clock); warm-up and the final save left out. Ratio: best bare / best doctune
  inproc     (--inproc) `train_adapter` in this process with a sink that keeps metrics in a list: DocTune's
             callbacks without Ray, the store or the actor's process, to tell the two costs apart
  e2e_s      the whole call: bare = dataset, model, trainer, train, adapter saved; doctune =
             `DocTune.train` (request checks, a fresh worker process that imports torch/transformers/TRL,
             the model, the training, the adapter, the run recorded). Also printed: the actor's span from
             its `started` to its `completed` event (store timestamps, flushed every second, so ±1 s).

The bare variant runs in this process, which has already imported everything; each doctune repetition is
a fresh worker process that pays its imports (in e2e) and a slower first few steps (in train_s, not steady).

Noise: at the default 60 steps the training lasts about 1.5 s on one core, and on a machine shared with other
work the spread between repetitions (10-20%) can exceed the callbacks' cost; the median-per-repetition ratio
shows it. For a decision use e.g. --max-steps 200 --reps 4.

    .venv/bin/python bench/bench_train_overhead.py [--max-steps 60] [--rows 64] [--reps 2]
        [--eval-save-steps N] [--bare-threads N] [--bare-nice N] [--inproc] [--num-cpus N] [--skip-steps 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from backend.train_config import TrainConfig, load_preset  # noqa: E402

PROJECT = "bench"
TARGET_OVERHEAD = 1.10


def synthetic_rows(n: int) -> list[dict]:
    """Like tests/actors/test_train_run.py's `make_dataset`: short Q&A rows, one in eight for validation."""
    return [{"sample_id": f"s{i:03d}", "split": "val" if i % 8 == 0 else "train", "path": f"docs/p{i % 6}.md",
             "task": "qa", "language": "en", "instruction": f"What does berth rule {i % 6} say about slot {i}?",
             "input": "", "output": f"Berth rule {i % 6} closes the slot window at {10 + i % 6}:00 sharp; "
                                    f"slot {i} must be confirmed {i % 4 + 1} days ahead.",
             "messages": None, "run_id": "r", "chunk_id": "c", "start_line": 1, "end_line": 2,
             "generator": "bench", "template_version": "qa@bench"} for i in range(n)]


def bench_config(max_steps: int, eval_save_steps: int) -> TrainConfig:
    cfg = load_preset("tiny")
    cfg.training.max_steps = max_steps
    cfg.training.eval_steps = cfg.training.save_steps = eval_save_steps
    return cfg


def start_local_ray(num_cpus: int, home: Path) -> None:
    """A fresh loopback cluster of our own with the home's token and temp folder (`actors.runtime.init_ray`
    without an address), not a cluster that RAY_ADDRESS names (e.g. a test session's)."""
    from actors.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(None, num_cpus=num_cpus, home=home)


def actor_threads() -> dict:
    """torch's threads and the niceness of a worker with the train actor's resources (`num_cpus=1` on a
    cluster without GPU)."""
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self) -> dict:
            import torch

            return {"torch": torch.get_num_threads(), "omp_env": os.environ.get("OMP_NUM_THREADS"),
                    "nice": os.nice(0)}

    probe = Probe.remote()
    out = ray.get(probe.threads.remote())
    ray.kill(probe)
    return out


def renice_this_process(nice: int) -> None:
    """Every thread of this process at `nice` (Linux keeps niceness per thread; new threads inherit it)."""
    tasks = Path("/proc/self/task")
    for tid in ([int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile


# ---- the variants ------------------------------------------------------------------------------------

def run_bare(cfg: TrainConfig, train_rows, val_rows, model_path: Path, out_dir: Path, skip: int) -> dict:
    import psutil
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTTrainer

    from backend.train import _let_trl_run_on_cpu, _sft_config, build_hf_model, detect_hardware, rows_to_dataset
    from backend.train_config import resolve_for_hardware

    class Clock(TrainerCallback):  # reads the clock at each training log; nothing else
        def __init__(self):
            self.times = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.times.append((time.perf_counter(), logs.get("num_tokens")))

    t0 = time.perf_counter()
    hardware = detect_hardware()
    cfg = resolve_for_hardware(cfg, **hardware)
    _let_trl_run_on_cpu()
    train_ds, val_ds = rows_to_dataset(train_rows), rows_to_dataset(val_rows) if val_rows else None
    model, tokenizer = build_hf_model(cfg, model_path)
    t = cfg.training
    clock = Clock()
    trainer = SFTTrainer(model=model, args=_sft_config(cfg, out_dir, t.per_device_train_batch_size,
                                                        t.gradient_accumulation_steps, val_ds is not None,
                                                        hardware["cuda"]),
                         train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)
    proc = psutil.Process()
    cpu0, w0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    output = trainer.train()
    cpu_percent = 100 * (sum(proc.cpu_times()[:2]) - cpu0) / (time.perf_counter() - w0)
    trainer.model.save_pretrained(out_dir / "adapter")
    tokenizer.save_pretrained(out_dir / "adapter")
    e2e = time.perf_counter() - t0
    tokens = max(h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h)
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(clock.times, clock.times[1:])]
    return {"train_s": output.metrics["train_runtime"], "e2e_s": e2e, "tokens": tokens,
            "steady_tps": statistics.median(rates[skip:] or rates), "steps": trainer.state.global_step,
            "threads": torch.get_num_threads(), "cpu_percent": cpu_percent, "span_s": None}


def from_metrics(rows, skip: int) -> dict:
    """train_s, tokens, steady tokens/s and mean CPU% from a DocTune run's (step, name, value) metrics."""
    by_name: dict[str, list] = {}
    for step, name, value in sorted(rows, key=lambda r: r[0]):
        by_name.setdefault(name, []).append((step, value))
    rates = [v for _, v in by_name["tokens_per_second"]]
    cpu = [v for s, v in by_name["cpu_percent"] if s > skip]
    return {"train_s": by_name["train_runtime"][-1][1], "tokens": max(v for _, v in by_name["num_tokens"]),
            "steady_tps": statistics.median(rates[skip:] or rates),
            "cpu_percent": statistics.mean(cpu) if cpu else float("nan")}


def run_doctune(client, cfg: TrainConfig, skip: int) -> dict:
    t0 = time.perf_counter()
    result = client.train(PROJECT, cfg)
    e2e = time.perf_counter() - t0
    if result["status"] != "completed":
        raise RuntimeError(f"the DocTune run ended {result['status']}: {result.get('error')}")
    metrics = client.metrics(result["run_id"]).to_pylist()
    events = {e["kind"]: e["ts"] for e in client.store.run_events(result["run_id"])}
    return {**from_metrics([(m["step"], m["name"], m["value"]) for m in metrics], skip), "e2e_s": e2e,
            "steps": result["global_step"], "span_s": (events["completed"] - events["started"]).total_seconds()}


def run_inproc(cfg: TrainConfig, train_rows, val_rows, model_path: Path, out_dir: Path, skip: int) -> dict:
    """`backend.train.train_adapter` in this process (DocTune's callbacks, TensorBoard and resource metrics;
    no Ray, no store): with --inproc, to tell the callbacks' cost from the actor's."""
    from backend.train import train_adapter

    class ListSink:
        def __init__(self):
            self.rows = []

        def log(self, step, metrics):
            self.rows += [(step, k, v) for k, v in metrics.items()]

        def event(self, kind, detail):
            pass

    sink = ListSink()
    t0 = time.perf_counter()
    result = train_adapter(cfg, train_rows, val_rows, out_dir, sink=sink, base_model_path=model_path)
    return {**from_metrics(sink.rows, skip), "e2e_s": time.perf_counter() - t0, "steps": result.global_step,
            "span_s": None}


# ---- main --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--eval-save-steps", type=int, default=None,
                    help="eval_steps and save_steps in both variants (default: max_steps + 1)")
    ap.add_argument("--bare-threads", type=int, default=None,
                    help="torch threads for the bare variant (default: the actor's; 0: this process's default)")
    ap.add_argument("--bare-nice", type=int, default=None,
                    help="niceness for the bare variant (default: the actor's; 0: leave this process's)")
    ap.add_argument("--inproc", action="store_true",
                    help="also run train_adapter in this process (DocTune's callbacks without Ray), as a third variant")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--skip-steps", type=int, default=5, help="logs left out of the steady-state median")
    args = ap.parse_args()

    import datasets
    import ray
    import torch
    import transformers

    from actors.client import DocTune
    from backend.tiny_model import ensure_tiny_model

    datasets.disable_progress_bars()  # this process's bars (the bare variant's); the actor logs nothing here
    transformers.utils.logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp(prefix="doctune-bench-train-"))
    home = tmp / "home"
    client = None
    try:
        start_local_ray(args.num_cpus, home)
        client = DocTune(home)
        client.store.upsert_project(PROJECT, "/nowhere", None)
        version = client.store.create_dataset(PROJECT, synthetic_rows(args.rows), source_runs=["r"], config={},
                                              stats={})
        rows = client.store.dataset_rows(PROJECT, version)  # the store's order, which the actor trains in
        train_rows = [r for r in rows if r["split"] == "train"]
        val_rows = [r for r in rows if r["split"] == "val"]
        model_path = ensure_tiny_model(home / "models")
        eval_save = args.eval_save_steps or args.max_steps + 1
        cfg = bench_config(args.max_steps, eval_save)

        probe = actor_threads()
        native = torch.get_num_threads()
        bare_threads = probe["torch"] if args.bare_threads is None else (args.bare_threads or native)
        torch.set_num_threads(bare_threads)
        own_nice = os.nice(0)
        bare_nice = probe["nice"] if args.bare_nice is None else (args.bare_nice or own_nice)
        if bare_nice > own_nice:  # only ever raised (lowering needs privileges); the actor is another process
            renice_this_process(bare_nice)
        bare_nice = os.nice(0)
        print(f"tiny model {model_path.name}, dataset {version}: {len(train_rows)} train / {len(val_rows)} val rows; "
              f"max_steps {args.max_steps}, eval/save every {eval_save} steps; {args.num_cpus} Ray CPUs, "
              f"{os.cpu_count()} cores")
        print(f"torch threads: actor {probe['torch']} (OMP_NUM_THREADS={probe['omp_env']}), this process "
              f"{native} by default, bare runs with {bare_threads}; niceness: actor {probe['nice']}, this process "
              f"{own_nice}, bare runs at {bare_nice}")

        runs: dict[str, list[dict]] = {"bare": [], "doctune": [], **({"inproc": []} if args.inproc else {})}
        for rep in range(args.reps):
            for name in runs:
                if name == "bare":
                    r = run_bare(cfg, train_rows, val_rows, model_path, tmp / f"bare-{rep}", args.skip_steps)
                elif name == "inproc":
                    r = run_inproc(cfg, train_rows, val_rows, model_path, tmp / f"inproc-{rep}", args.skip_steps)
                else:
                    r = run_doctune(client, cfg, args.skip_steps)
                runs[name].append(r)
                span = f"  actor span {r['span_s']:5.1f} s" if r["span_s"] is not None else ""
                print(f"rep {rep} {name:<8} train {r['train_s']:6.2f} s  {r['tokens'] / r['train_s']:8.0f} tok/s  "
                      f"steady {r['steady_tps']:8.0f} tok/s  e2e {r['e2e_s']:6.2f} s{span}  "
                      f"cpu {r['cpu_percent']:4.0f}%  steps {r['steps']}  tokens {r['tokens']:.0f}")

        best = {name: min(rs, key=lambda r: r["train_s"]) for name, rs in runs.items()}
        b, d = best["bare"], best["doctune"]
        if args.inproc:
            i = best["inproc"]
            print(f"inproc (train_adapter in this process, no Ray): best train {i['train_s']:.2f} s, "
                  f"{i['train_s'] / b['train_s']:.3f} x bare; steady {b['steady_tps'] / i['steady_tps']:.3f} x bare")
        if b["tokens"] != d["tokens"] or b["steps"] != d["steps"]:
            print(f"warning: the variants did different work: tokens {b['tokens']} vs {d['tokens']}, "
                  f"steps {b['steps']} vs {d['steps']}")
        overhead = d["train_s"] / b["train_s"]
        steady = max(r["steady_tps"] for r in runs["bare"]) / max(r["steady_tps"] for r in runs["doctune"])
        e2e = min(r["e2e_s"] for r in runs["doctune"]) / min(r["e2e_s"] for r in runs["bare"])
        pairs = statistics.median(d_["train_s"] / b_["train_s"] for b_, d_ in zip(runs["bare"], runs["doctune"]))
        verdict = "PASS" if overhead <= TARGET_OVERHEAD else "MISS"
        print(f"best train_s: bare {b['train_s']:.2f} s ({b['tokens'] / b['train_s']:.0f} tok/s), doctune "
              f"{d['train_s']:.2f} s ({d['tokens'] / d['train_s']:.0f} tok/s)")
        print(f"overhead doctune/bare: train {overhead:.3f} (target <= {TARGET_OVERHEAD}: {verdict}), "
              f"steady {steady:.3f}, median per repetition {pairs:.3f}, end-to-end {e2e:.2f}")
        line = {
            "max_steps": args.max_steps, "rows": args.rows, "tokens": int(b["tokens"]),
            "threads_actor": probe["torch"], "threads_bare": bare_threads, "nice_actor": probe["nice"],
            "nice_bare": bare_nice,
            "cpu_pct_bare": round(b["cpu_percent"]), "cpu_pct_doctune": round(d["cpu_percent"]),
            "bare_train_s": round(b["train_s"], 2), "doctune_train_s": round(d["train_s"], 2),
            "bare_tps": round(b["tokens"] / b["train_s"]), "doctune_tps": round(d["tokens"] / d["train_s"]),
            "overhead": round(overhead, 3), "overhead_steady": round(steady, 3),
            "overhead_median_rep": round(pairs, 3),
            "bare_e2e_s": round(min(r["e2e_s"] for r in runs["bare"]), 2),
            "doctune_e2e_s": round(min(r["e2e_s"] for r in runs["doctune"]), 2),
            "doctune_span_s": round(min(r["span_s"] for r in runs["doctune"]), 1),
            "overhead_e2e": round(e2e, 2), "target": TARGET_OVERHEAD, "verdict": verdict,
        }
        print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))
    finally:
        if client is not None:
            client.store.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
