"""GPU training throughput and memory: the `unsloth` engine against the `hf` engine, 4-bit LoRA, seed preset.

The model has Qwen2.5-3B's architecture (the values in QWEN25_3B, written out so nothing is downloaded) and
random bf16 weights, built in CPU memory (on the GPU its 3.09 B params x 2 bytes = 5.75 GiB would not fit the
6 GB card it judges) and saved to a temp folder, from which each engine loads it in 4-bit, with the tiny
model's tokenizer (`backend.tiny_model`; its 2,048 ids are all below the 151,936 rows of the embedding). The
data is random words from the bundled sample repository: each row is a short instruction and an answer far
longer than --seq-len, so TRL's truncation leaves every sample exactly --seq-len tokens (no padding; the loss
is on the answer, as in DocTune's completion-only training).

Each engine trains in its own subprocess (unsloth patches transformers, TRL and peft for the whole process
when imported, which must not leak into the hf measurement), pinned to one GPU (CUDA_VISIBLE_DEVICES: on a
multi-GPU host `device_map={"": 0}` leaves the Trainer's n_gpu above 1 and TRL refuses), capped at
--mem-cap-gib of GPU memory (`set_per_process_memory_fraction`: a large card then runs out where the 6 GB
laptop would), with unsloth's compiled cache in the temp folder, through DocTune's own `train_adapter`, so
`build_unsloth_model` / `build_hf_model`, `_sft_config` and the trainer are exactly what a run uses:
`load_preset("seed")` (QLoRA r16 on all projections, per-device batch 4, accumulation 4, gradient
checkpointing, AdamW, bf16) with the model path pointing to the folder, max_seq_length --seq-len, and
max_steps = --warmup + --steps, logging every step, no checkpoint but the one written after the last step.
The parent collects one JSON per engine:

  tokens/s   non-padding tokens trained on (TRL's `num_tokens`) between the log of step --warmup and the
             log of the last step, over the wall time between those two logs (warm-up, model loading and
             the final save left out)
  peak       torch.cuda.max_memory_allocated() of the engine's process over the whole run (also printed apart:
             while loading and quantising the model, and while training, reset in between), and the
             reserved peak (max_memory_reserved, since the reset: the training phase)

Targets: unsloth >= 2x hf tokens/s, and peak allocated <= 5 GiB at the seed preset (judged on unsloth,
the engine `engine: auto` picks on a GPU; hf's peak is printed too). PASS/MISS printed, never asserted.
Without CUDA it says why, prints `RESULT skipped=no_cuda` and exits 1 at once (before building anything).

With --cli it then runs the product itself on the same random 3B model, as a user would, in a home of its own:
`doctune ingest` of the bundled sample repository, `doctune synth --generator heuristic` (no API), `doctune
train --preset seed` (model.name_or_path the built folder, --cli-steps optimizer steps) and `doctune eval
--limit 8 --no-judge`; it prints each command's status and time, the run's tokens/s and GPU peak, and
`RESULT_CLI train=... eval=...`.

    .venv/bin/python bench/bench_train_gpu.py [--steps 20] [--warmup 3] [--seq-len 2048] [--engines unsloth,hf]
        [--model-dir DIR] [--child-timeout 900] [--mem-cap-gib 6] [--cli] [--cli-steps 10]

Needs the `gpu` extra (unsloth, bitsandbytes). --model-dir keeps the built model (~6 GB) for the next call;
without it the model is built in a temp folder and deleted. Each engine trains (warmup + steps) x 16 samples
of --seq-len tokens (753,664 tokens at the defaults); expect several minutes in all on one H100 (an estimate:
this script has not run on a GPU yet), less with --steps 10.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN25_3B = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                 tie_word_embeddings=True, rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False,
                 max_window_layers=36)
TARGET_SPEEDUP = 2.0
TARGET_PEAK_GIB = 5.0
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
GIB = 2**30


# ---- children ----------------------------------------------------------------------------------------

def build_model_dir(out: Path, tiny_cache: Path, arch: dict = QWEN25_3B) -> None:
    """A Qwen2 with `arch` and random bf16 weights, plus the tiny model's tokenizer (built under
    `tiny_cache`), saved into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from backend.tiny_model import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(tiny_cache))
    if len(tokenizer) > arch["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids, above the model's vocab_size {arch['vocab_size']}")
    tokenizer.model_max_length = arch["max_position_embeddings"]  # the tiny model's is 1024
    config = Qwen2Config(**arch, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cpu"):  # 5.75 GiB in bf16: more than the 6 GB card holds beside its CUDA context
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def make_rows(n: int, seq_len: int, seed: int = 0) -> list[dict]:
    """Rows whose answer is 2 x seq_len random words (each at least one token), so every sample is cut to
    exactly seq_len tokens."""
    from backend.tiny_model import sample_corpus

    words = sorted({w for text in sample_corpus() for w in text.split() if w.isalpha()})
    rng = random.Random(seed)
    return [{"sample_id": f"g{i:04d}", "split": "train", "instruction": f"Continue the notes, part {i}.",
             "input": "", "output": " ".join(rng.choices(words, k=2 * seq_len)), "messages": None}
            for i in range(n)]


class ClockSink:
    """A `MetricSink` that keeps (time, step, num_tokens) of every training log; at each `model` event (the
    model built, training not started: again after an out-of-memory retry) it starts the logs afresh, notes
    the loading peak and resets CUDA's peak counters."""

    def __init__(self):
        self.points: list[tuple[float, int, float | None]] = []
        self.load_peak_gib: float | None = None

    def log(self, step, metrics):
        if "loss" in metrics:
            self.points.append((time.perf_counter(), step, metrics.get("num_tokens")))

    def event(self, kind, detail):
        import torch

        if kind == "model":
            self.points.clear()
        if kind == "model" and torch.cuda.is_available():
            self.load_peak_gib = max(self.load_peak_gib or 0.0, torch.cuda.max_memory_allocated() / GIB)
            torch.cuda.reset_peak_memory_stats()


def run_engine(engine: str, model_dir: Path, out_dir: Path, args) -> dict:
    """Train with `engine` through `train_adapter`; tokens/s after the warm-up steps and peak GPU memory."""
    if engine == "unsloth":
        import unsloth  # noqa: F401  - first, before anything imports transformers, TRL or peft
    import torch

    cap = cap_gpu_memory(args.mem_cap_gib)

    from backend.train import train_adapter
    from backend.train_config import load_preset

    cfg = load_preset("seed")
    cfg.engine = engine
    cfg.model.name_or_path = str(model_dir)
    cfg.model.max_seq_length = args.seq_len
    t = cfg.training
    t.max_steps = args.warmup + args.steps
    t.logging_steps = 1
    t.save_steps = t.eval_steps = t.max_steps + 1
    rows = make_rows(min(t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps, 128),
                     args.seq_len)
    sink = ClockSink()
    started = time.perf_counter()
    result = train_adapter(cfg, rows, [], out_dir, sink=sink, base_model_path=model_dir)
    total_s = time.perf_counter() - started
    first = next(p for p in sink.points if p[1] >= args.warmup)
    last = sink.points[-1]
    per_step = result.batch_size * result.grad_accum * args.seq_len
    counted = first[2] is not None and last[2] is not None
    tokens = last[2] - first[2] if counted else (last[1] - first[1]) * per_step
    cuda = torch.cuda.is_available()
    train_peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    return {"engine": engine, "tokens_per_s": tokens / (last[0] - first[0]), "tokens": tokens,
            "tokens_counted_by": "num_tokens" if counted else "steps x batch x accum x seq_len",
            "tokens_per_sample": (last[2] / (last[1] * result.batch_size * result.grad_accum)) if counted else None,
            "measured_steps": last[1] - first[1], "seconds_per_step": (last[0] - first[0]) / (last[1] - first[1]),
            "peak_allocated_gib": max(train_peak, sink.load_peak_gib or 0.0) if cuda else None,
            "train_peak_allocated_gib": train_peak, "load_peak_allocated_gib": sink.load_peak_gib,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB if cuda else None,
            "batch_size": result.batch_size, "grad_accum": result.grad_accum, "status": result.status,
            "final_loss": result.train_loss, "total_s": total_s, "memory_cap_gib": cap,
            "gpu": torch.cuda.get_device_name() if cuda else "cpu"}


def cap_gpu_memory(cap_gib: float) -> float | None:
    """Limit this process's CUDA allocator to `cap_gib` (0: no cap), so a large card runs out of memory where
    the 6 GB laptop would; the CUDA context and cuBLAS workspace come on top, as they do there. Returns the cap."""
    import torch

    if not cap_gib or not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total), 0)
    return min(cap_gib, total / GIB)


def child_main(args) -> None:
    workdir = Path(args.workdir)
    if args.child == "build":
        build_model_dir(Path(args.model_dir), workdir / "tiny")
        return
    try:
        out = run_engine(args.engine, Path(args.model_dir), workdir / f"run-{args.engine}", args)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which prints it
        out = {"engine": args.engine, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    (workdir / f"{args.engine}.json").write_text(json.dumps(out))


# ---- parent ------------------------------------------------------------------------------------------

def one_gpu_env(workdir: Path) -> dict[str, str]:
    """The children's environment: offline, one GPU (the first this process may use), unsloth's compiled cache
    in the temp folder rather than the working directory."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    return {**os.environ, **OFFLINE, "CUDA_VISIBLE_DEVICES": visible,
            "UNSLOTH_COMPILE_LOCATION": str(workdir / "unsloth_compiled_cache")}


def spawn(args, workdir: Path, child: str, engine: str | None, model_dir: Path) -> tuple[int, Path]:
    log = workdir / f"{engine or child}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--workdir", str(workdir),
           "--model-dir", str(model_dir), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--seq-len", str(args.seq_len), "--mem-cap-gib", str(args.mem_cap_gib)] + (
               ["--engine", engine] if engine else [])
    with open(log, "wb") as f:
        try:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=workdir, timeout=args.child_timeout,
                                  env=one_gpu_env(workdir)).returncode
        except subprocess.TimeoutExpired:
            code = -1
    return code, log


def run_cli(args, workdir: Path, model_dir: Path) -> None:
    """The product's own commands on the random 3B model, in a home of their own (see the module docstring)."""
    home = workdir / "home"
    config = workdir / "seed-random-3b.yaml"
    config.write_text(json.dumps({"preset": "seed", "model": {"name_or_path": str(model_dir)},
                                  "training": {"save_steps": args.cli_steps, "eval_steps": args.cli_steps,
                                               "logging_steps": 1}}))  # JSON is YAML
    env = {**one_gpu_env(workdir), "DOCTUNE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    doctune = [sys.executable, "-m", "actors.cli"]
    steps = [("ingest", ["ingest", str(ROOT / "data" / "sample_repo"), "--project", "gpu-check"]),
             ("synth", ["synth", "--project", "gpu-check", "--generator", "heuristic"]),
             ("train", ["train", "--project", "gpu-check", "--preset", "seed", "--config", str(config),
                        "--max-steps", str(args.cli_steps)]),
             ("eval", ["eval", "--limit", "8", "--no-judge", "--max-new-tokens", "64"])]
    outcome, run_id = {}, None
    for name, cmd in steps:
        if name == "eval":
            if run_id is None:
                outcome[name] = "skipped"
                break
            cmd = cmd + ["--run", run_id]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(doctune + cmd + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=args.child_timeout)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            code, out, err = -1, "", "timed out"
        seconds = time.perf_counter() - t0
        outcome[name] = "ok" if code == 0 else f"exit_{code}"
        print(f"doctune {name:<6} exit {code} in {seconds:.0f} s")
        if code != 0:
            print("\n".join((out + err).splitlines()[-25:]))
            break
        if name == "train":
            result = json.loads(out[out.index("{"):])
            run_id = result["run_id"]
            print(f"  run {run_id}: {result.get('status')}, {result.get('global_step')} steps, "
                  f"{result.get('tokens_per_second') or 0:.0f} tokens/s, train loss {result.get('train_loss')}")
            if result.get("peak_gpu_mb") is not None:  # the run's last logged peak; no cap in this process
                print(f"  GPU peak allocated {result['peak_gpu_mb'] / 1024:.2f} GiB")
        if name == "eval":
            print("  " + out.strip().splitlines()[0][:300] if out.strip() else "  (no output)")
    print("RESULT_CLI " + " ".join(f"{k}={v}" for k, v in outcome.items()))


def tail(log: Path, n: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps measured, after the warm-up")
    ap.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the measurement")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--engines", default="unsloth,hf")
    ap.add_argument("--model-dir", default=None, help="build the model here (or reuse it) and keep it")
    ap.add_argument("--child-timeout", type=int, default=900, help="seconds per subprocess")
    ap.add_argument("--mem-cap-gib", type=float, default=6.0, help="GPU memory per engine process (0: no cap)")
    ap.add_argument("--cli", action="store_true", help="then ingest, synth, train --preset seed, eval --limit 8")
    ap.add_argument("--cli-steps", type=int, default=10, help="optimizer steps of the --cli training run")
    ap.add_argument("--child", choices=["build", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: this benchmark measures 4-bit training on a GPU (unsloth and bitsandbytes need "
              "CUDA); run it on a machine where `nvidia-smi` finds one, with the `gpu` extra installed")
        print("RESULT skipped=no_cuda")
        sys.exit(1)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="doctune-bench-gpu-"))
    model_dir = Path(args.model_dir).resolve() if args.model_dir else workdir / "qwen2.5-3b-random"
    try:
        print(f"GPU {torch.cuda.get_device_name()}; engines {', '.join(engines)}; seq_len {args.seq_len}, "
              f"{args.warmup} warm-up + {args.steps} measured steps each")
        if not (model_dir / "config.json").is_file():
            t0 = time.perf_counter()
            code, log = spawn(args, workdir, "build", None, model_dir)
            if code != 0:
                print(f"building the model failed ({code}):\n{tail(log)}")
                print("RESULT error=build_failed")
                return
            print(f"built {model_dir} in {time.perf_counter() - t0:.0f} s")
        results = {}
        for engine in engines:
            code, log = spawn(args, workdir, "train", engine, model_dir)
            path = workdir / f"{engine}.json"
            r = json.loads(path.read_text()) if path.is_file() else {"error": f"exit {code} (timeout or crash)"}
            results[engine] = r
            if "error" in r:
                print(f"{engine:<8} FAILED: {r['error']}\n{tail(log)}")
                continue
            note = "" if (r["batch_size"], r["grad_accum"]) == (4, 4) else \
                f"  (out of memory: batch {r['batch_size']} x accum {r['grad_accum']})"
            print(f"{engine:<8} {r['tokens_per_s']:8.0f} tok/s  {r['seconds_per_step']:6.2f} s/step  "
                  f"peak allocated {r['peak_allocated_gib']:5.2f} GiB (loading {r['load_peak_allocated_gib'] or 0:.2f}, "
                  f"training {r['train_peak_allocated_gib']:.2f}), reserved {r['peak_reserved_gib']:5.2f} GiB  "
                  f"tokens/sample {r['tokens_per_sample'] or float('nan'):.0f}  loss {r['final_loss'] or float('nan'):.3f}  "
                  f"run {r['total_s']:.0f} s{note}")

        def rounded(x: float, digits: int = 0):
            return x if math.isnan(x) else round(x, digits) if digits else int(round(x))

        def value(engine, key):
            r = results.get(engine, {})
            return r.get(key) if "error" not in r and r.get(key) is not None else math.nan

        speedup = value("unsloth", "tokens_per_s") / value("hf", "tokens_per_s")
        peak = value("unsloth", "peak_allocated_gib")
        speed_verdict = "PASS" if speedup >= TARGET_SPEEDUP else "MISS"
        peak_verdict = "PASS" if peak <= TARGET_PEAK_GIB else "MISS"
        print(f"unsloth/hf tokens/s: {speedup:.2f} (target >= {TARGET_SPEEDUP}: {speed_verdict}); unsloth peak "
              f"{peak:.2f} GiB (target <= {TARGET_PEAK_GIB}: {peak_verdict})")
        line = {"gpu": torch.cuda.get_device_name().replace(" ", "_"), "seq_len": args.seq_len, "steps": args.steps,
                "unsloth_tps": rounded(value("unsloth", "tokens_per_s")), "hf_tps": rounded(value("hf", "tokens_per_s")),
                "speedup": rounded(speedup, 2), "speedup_verdict": speed_verdict,
                "unsloth_peak_gib": rounded(peak, 2),
                "unsloth_reserved_gib": rounded(value("unsloth", "peak_reserved_gib"), 2),
                "hf_peak_gib": rounded(value("hf", "peak_allocated_gib"), 2),
                "hf_reserved_gib": rounded(value("hf", "peak_reserved_gib"), 2), "peak_verdict": peak_verdict}
        failed = [e for e, r in results.items() if "error" in r]
        if failed:
            line["failed"] = ",".join(failed)
        print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))
        if args.cli:
            run_cli(args, workdir, model_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
