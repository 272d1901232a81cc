"""Training: a LoRA adapter on a dataset version, with TRL's SFT trainer on one of two engines.

    rows (instruction, input, output, messages) ──rows_to_dataset──▶ prompt/completion conversations
        ──SFTTrainer (loss on the assistant's last turn only)──▶ out_dir/checkpoints/checkpoint-N
        ──on completion──▶ out_dir/adapter (safetensors + tokenizer + doctune_train_config.json)

Engines: `hf` (transformers + peft, 4-bit through bitsandbytes on CUDA; runs anywhere) and `unsloth`
(fused kernels, CUDA only). Both hand a peft model to the same trainer. Unsloth patches transformers
and TRL process-wide when imported, so it is imported only inside the unsloth engine, only with CUDA;
and transformers, TRL and peft are imported inside functions too, so that unsloth, when used, comes first.

Metrics go to a `MetricSink` every logging step, and to TensorBoard under out_dir/tensorboard.
A run can be cancelled (a checkpoint is written first) and resumed; on CUDA out-of-memory the
per-device batch is halved and gradient accumulation doubled, and the run resumes from its last checkpoint.
A run can also continue an earlier run's adapter (`init_adapter`): same base and LoRA shape, its weights loaded
into the new adapter before the first step, trained further on a newer dataset version.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import importlib.util
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
import torch

from backend.adapter_files import RUN_CONFIG_FILE, TORCH_DTYPES
from backend.base_models import resolve_model_path
from backend.chat import stop_token_ids, to_prompt_completion
from backend.config import REPO_ROOT
from backend.config_base import ConfigError
from backend.device import cuda_bf16_supported, gpu_utilisation_percent
from backend.train_config import DataSettings, TrainConfig, resolve_for_hardware

CHECKPOINTS, ADAPTER, TENSORBOARD = "checkpoints", "adapter", "tensorboard"
REPLAY_SET = REPO_ROOT / "data" / "replay" / "general_instructions.jsonl"
MAX_OOM_RETRIES = 3
_MB = 2**20


class MetricSink(Protocol):
    """Where a run reports. Called on the training thread: keep calls cheap (queue, don't write)."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def event(self, kind: str, detail: dict) -> None: ...


@dataclass
class TrainResult:
    status: str
    """`completed` or `cancelled`."""
    global_step: int
    epochs_done: float
    train_loss: float | None
    """The last logged training loss (not the run's average)."""
    eval_loss: float | None
    """The last evaluation's loss on the val split; None without val rows."""
    adapter_dir: Path | None
    """out_dir/adapter when completed; None when cancelled (resume to finish)."""
    last_checkpoint: Path | None
    batch_size: int
    """Per-device batch the run ended with (lower than configured after out-of-memory)."""
    grad_accum: int
    events: list[dict] = field(default_factory=list)
    """Everything reported through `sink.event`, in order: {"kind": ..., "detail": {...}}."""


# ---- data ------------------------------------------------------------------------------------------

def select_training_rows(rows: list[dict], data: DataSettings, seed: int) -> list[dict]:
    """The train rows a run trains on under `data` (tasks, length bound, sample cap), in the rows' order.

    The cap takes whole chunks in a seeded order (sha256 of seed and chunk id), skipping a chunk that would
    pass the cap, so every chunk in the selection is there with all its samples. Deterministic: evaluation
    calls it again to know which chunks a run learned.
    """
    from backend.tokens import token_counter

    kept = [r for r in rows if data.tasks is None or r.get("task") in data.tasks]
    if data.max_sample_tokens is not None:
        count = token_counter(None)
        kept = [r for r in kept if count(_row_text(r)) <= data.max_sample_tokens]
    if data.max_samples is None or len(kept) <= data.max_samples:
        return kept
    by_chunk: dict[str, list[dict]] = {}
    for r in kept:
        by_chunk.setdefault(str(r.get("chunk_id") or r["sample_id"]), []).append(r)
    order = sorted(by_chunk, key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest())
    chosen, total = set(), 0
    for chunk in order:
        if total + len(by_chunk[chunk]) <= data.max_samples:
            chosen.add(chunk)
            total += len(by_chunk[chunk])
    return [r for r in kept if str(r.get("chunk_id") or r["sample_id"]) in chosen]


def _row_text(row: dict) -> str:
    parts = [row.get("instruction") or "", row.get("input") or "", row.get("output") or ""]
    messages = row.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    return "\n".join(parts + [m.get("content", "") for m in messages or []])


def replay_rows(share: float, n_repository: int, seed: int, path: Path = REPLAY_SET) -> list[dict]:
    """General instruction rows making up `share` of a training set of `n_repository` repository rows, in a
    seeded order (repeated when more are needed than the file holds)."""
    if share <= 0 or n_repository == 0:
        return []
    items = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    items.sort(key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest())
    wanted = round(share / (1 - share) * n_repository)
    return [{"sample_id": f"{items[i % len(items)]['id']}#{i // len(items)}", "split": "train", "task": "replay",
             "instruction": items[i % len(items)]["instruction"], "input": items[i % len(items)].get("input", ""),
             "output": items[i % len(items)]["output"], "messages": None, "chunk_id": None}
            for i in range(wanted)]


def rows_to_dataset(rows: list[dict]):
    """DocTune rows → a `datasets.Dataset` with `prompt` and `completion` columns (lists of {role, content})."""
    from datasets import Dataset

    return Dataset.from_list([to_prompt_completion(r) for r in rows])


# ---- checks before anything is written -------------------------------------------------------------

def use_all_cores() -> int:
    """On a CPU, let torch use every core of the machine: Ray starts a worker with OMP_NUM_THREADS set to the
    actor's `num_cpus` (1), which makes a CPU training or evaluation ~1.6x slower on two cores (measured).
    Returns the thread count."""
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, psutil.cpu_count(logical=True) or 1))
    return torch.get_num_threads()


def detect_hardware() -> dict[str, bool]:
    """What `resolve_for_hardware` needs to know; unsloth is looked up, never imported."""
    return {"cuda": torch.cuda.is_available(), "bf16_supported": cuda_bf16_supported(),
            "unsloth_available": importlib.util.find_spec("unsloth") is not None}


def _check_model(cfg: TrainConfig, model_path: Path) -> None:
    """The model can take the configured sequence length, and its tokenizer has a chat template."""
    from transformers import AutoConfig, AutoTokenizer

    problems = []
    text_config = AutoConfig.from_pretrained(model_path, local_files_only=True).get_text_config()
    limit = text_config.max_position_embeddings
    if cfg.model.max_seq_length > limit:
        problems.append(f"model.max_seq_length={cfg.model.max_seq_length} is above {cfg.model.name_or_path}'s "
                        f"max_position_embeddings={limit}; set max_seq_length to {limit} or less")
    if AutoTokenizer.from_pretrained(model_path, local_files_only=True).chat_template is None:
        problems.append(f"{cfg.model.name_or_path}'s tokenizer has no chat template, which the trainer needs to "
                        f"format conversations; use a model that ships one (Qwen2.5 base and instruct models do)")
    if problems:
        raise ConfigError(problems)


# ---- models ----------------------------------------------------------------------------------------

def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    lora = cfg.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), bias=lora.bias, task_type="CAUSAL_LM")


def build_hf_model(cfg: TrainConfig, model_path: Path):
    """The `hf` engine's (peft model, tokenizer); `cfg` resolved for this machine. Adapter init seeded."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed

    dtype = TORCH_DTYPES[cfg.model.dtype]
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if cfg.model.load_in_4bit:  # QLoRA: NF4 weights with double quantisation, compute in the resolved dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    # No peft `prepare_model_for_kbit_training`: it upcasts every non-4-bit weight to fp32 (Qwen2.5-3B's tied
    # embedding from 0.6 to 1.2 GB) and so runs the residual stream in fp32, out of memory on 6 GB. What QLoRA
    # needs besides, TRL 1.15 does: get_peft_model freezes the base, and SFTTrainer calls
    # enable_input_require_grads when gradient checkpointing a peft model.
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    set_seed(cfg.training.seed)
    model = get_peft_model(model, lora_config(cfg))
    return model, AutoTokenizer.from_pretrained(model_path, local_files_only=True)


def load_adapter_weights(model, adapter_dir: Path) -> None:
    """Copy a saved adapter's LoRA weights into `model`'s (trainable) adapter, for either engine: both build the
    adapter with `get_peft_model`, so the parent's tensors are loaded by name over the fresh initialisation.

    Raises:
        ValueError: the saved adapter does not fill every LoRA tensor of `model` (another LoRA shape or base).
    """
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    weights = load_peft_weights(str(adapter_dir), device="cpu")
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"the adapter in {adapter_dir} does not fit this model's LoRA ({len(missing)} tensors "
                         f"missing, {len(result.unexpected_keys)} unexpected); continue it with its own base model "
                         f"and LoRA settings")


# ==== unsloth engine (CUDA only; cannot run on the CPU test machine) =================================
def build_unsloth_model(cfg: TrainConfig, model_path: Path):
    """The `unsloth` engine's (peft model, tokenizer), from unsloth's documented API."""
    # Imported here and only here: importing unsloth patches transformers and TRL for the whole process.
    from unsloth import FastLanguageModel

    dtype = None if cfg.model.dtype == "auto" else TORCH_DTYPES[cfg.model.dtype]
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_path), max_seq_length=cfg.model.max_seq_length, dtype=dtype,
        load_in_4bit=cfg.model.load_in_4bit, local_files_only=True)
    lora = cfg.lora
    model = FastLanguageModel.get_peft_model(
        model, r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.target_modules),
        lora_dropout=lora.dropout, bias=lora.bias,
        use_gradient_checkpointing="unsloth" if cfg.training.gradient_checkpointing else False,
        random_state=cfg.training.seed, max_seq_length=cfg.model.max_seq_length)
    return model, tokenizer


def unsloth_environment(out_dir: Path) -> dict[str, str]:
    """The variables the training process sets before importing unsloth, which reads them at import: offline
    (unsloth's `from_pretrained` otherwise asks the hub for statistics; only the run actor set this), and its
    compiled kernels under the run's folder rather than `./unsloth_compiled_cache` in the working directory."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "UNSLOTH_COMPILE_LOCATION": str(Path(out_dir).resolve() / "unsloth_compiled_cache")}


def free_unsloth_memory() -> None:
    """`free_accelerator_memory` after resetting unsloth's offloaded-checkpointing buffers, which grow during
    training and which unsloth resets only after a `train()` that succeeded: an out-of-memory attempt would
    leave them at their grown size for the retry."""
    from unsloth_zoo.gradient_checkpointing import reset_unsloth_gradient_checkpointing_buffers

    reset_unsloth_gradient_checkpointing_buffers()
    free_accelerator_memory()
# ==== end of the unsloth engine ======================================================================


# ---- TRL on CPU ------------------------------------------------------------------------------------

def _torch_token_log_probs(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs):
    """What TRL's `ChunkedLogProbFunction.apply` returns, in plain PyTorch with the full logits.

    (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) of the targets, each None when not in
    `outputs` (log_probs always); logits are scaled, soft-capped and divided by the temperature as there.
    """
    logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits / temperature
    log_p = torch.log_softmax(logits, dim=-1)
    log_probs = log_p.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
    with torch.no_grad():  # these three are metrics, not differentiable in TRL's kernel either
        log_sum_sq = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
        mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
        is_top1 = logits.argmax(-1) == targets if "is_top1" in outputs else None
    return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def _let_trl_run_on_cpu() -> None:
    """Give TRL's fused LM head a PyTorch path for tensors off CUDA.

    TRL 1.15's SFTTrainer always computes its loss through `add_fused_lm_head`, whose per-token
    log-probabilities come from a Triton kernel (`trl.kernels.ChunkedLogProbFunction`). Triton has no CPU
    backend, and CPU builds of torch do not ship it, so TRL's guarded import leaves the kernel as None and
    the first step fails with "'NoneType' object has no attribute 'apply'". This wraps the kernel: CUDA
    tensors still go to Triton, others to `_torch_token_log_probs`. Idempotent; called for CPU runs only.
    """
    import trl.trainer.utils as trl_utils

    kernel = trl_utils._ChunkedLogProbFunction
    if getattr(kernel, "doctune_cpu_fallback", False):
        return

    class LogProbsOnAnyDevice:
        doctune_cpu_fallback = True

        @staticmethod
        def apply(hidden, *args):
            if hidden.is_cuda and kernel is not None:
                return kernel.apply(hidden, *args)
            return _torch_token_log_probs(hidden, *args)

    trl_utils._ChunkedLogProbFunction = LogProbsOnAnyDevice


# ---- metrics and cancellation ----------------------------------------------------------------------

def resource_metrics(process: psutil.Process, cuda: bool) -> dict[str, float]:
    """Process CPU % (since the last call; >100 on several cores) and RSS, system RAM %, and on CUDA the
    allocator's memory and, where NVML answers, this process's GPU's utilisation. None of these waits for the GPU."""
    out = {"cpu_percent": process.cpu_percent(None), "rss_mb": process.memory_info().rss / _MB,
           "ram_percent": psutil.virtual_memory().percent}
    if cuda:
        out["gpu_mem_allocated_mb"] = torch.cuda.memory_allocated() / _MB
        out["gpu_mem_reserved_mb"] = torch.cuda.memory_reserved() / _MB
        out["gpu_mem_peak_mb"] = torch.cuda.max_memory_allocated() / _MB
        utilisation = gpu_utilisation_percent()
        if utilisation is not None:
            out["gpu_util_percent"] = utilisation
    return out


class _SinkForwarder:
    """The body of the trainer callback: forwards each log with throughput and resources, and cancels.

    Kept apart from `TrainerCallback` (mixed in by `_sink_callback`) so this module imports without
    transformers.
    """

    def __init__(self, sink: MetricSink, stop: threading.Event | None, cuda: bool):
        self.sink, self.stop, self.cuda = sink, stop, cuda
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None
        self.cancelled_at: int | None = None
        self._process = psutil.Process()
        self._tokens, self._time = 0.0, time.perf_counter()
        self._tokens_before = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._process.cpu_percent(None)  # the first call only starts psutil's interval
        # TRL's SFTTrainer logs `num_tokens`: non-padding tokens trained on, counted from the attention mask at
        # every step (it already syncs for that), cumulative since this trainer was built, so from 0 on resume too.
        # A resumed run's count goes on from the checkpoint's (its log history holds the whole run's, see on_log),
        # so a curve against tokens seen never folds back at a resume.
        self._tokens, self._time = 0.0, time.perf_counter()
        self._tokens_before = next((e["num_tokens"] for e in reversed(state.log_history) if "num_tokens" in e), 0.0)
        # the page's "step x of N" and time left; from_step: where this attempt started
        self.sink.event("steps", {"max_steps": state.max_steps, "from_step": state.global_step})

    def _maybe_cancel(self, state, control) -> None:
        if self.stop is not None and self.stop.is_set() and state.global_step < state.max_steps:
            control.should_save = True  # the checkpoint a resume starts from
            control.should_training_stop = True
            self.cancelled_at = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self._maybe_cancel(state, control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if "loss" in metrics:  # a training log (not an evaluation or the end-of-run summary)
            self.last_loss = metrics["loss"]
            now = time.perf_counter()
            tokens = metrics.get("num_tokens")
            if tokens is not None and now > self._time:
                metrics["tokens_per_second"] = (tokens - self._tokens) / (now - self._time)
                self._tokens, self._time = tokens, now
            metrics.update(resource_metrics(self._process, self.cuda))
        for name in ("num_tokens", "eval_num_tokens"):  # an evaluation logs the same count under its own name
            if name in metrics:
                metrics[name] += self._tokens_before
                if state.log_history and name in state.log_history[-1]:
                    state.log_history[-1][name] = metrics[name]  # what the next checkpoint's history holds
        if "eval_loss" in metrics:
            self.last_eval_loss = metrics["eval_loss"]
        self.sink.log(state.global_step, metrics)
        # stop right here when the sink asked for it while logging: this step's checkpoint is saved next
        self._maybe_cancel(state, control)


def _sink_callback(sink: MetricSink, stop: threading.Event | None, cuda: bool):
    from transformers import TrainerCallback

    class SinkCallback(_SinkForwarder, TrainerCallback):
        pass

    return SinkCallback(sink, stop, cuda)


def _tensorboard_callback(log_dir: Path):
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    # transformers 5 dropped TrainingArguments.logging_dir; this is the attribute its TENSORBOARD_LOGGING_DIR
    # variable sets, set here rather than through the environment, which every run in the process would share
    callback.logging_dir = str(log_dir)
    return callback


class _Events:
    """Forwards events to the sink and keeps them for the result."""

    def __init__(self, sink: MetricSink):
        self.sink, self.items = sink, []

    def __call__(self, kind: str, **detail) -> None:
        self.items.append({"kind": kind, "detail": detail})
        self.sink.event(kind, detail)


# ---- out-of-memory backoff -------------------------------------------------------------------------

def is_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (some kernels raise it as a plain RuntimeError)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


T = TypeVar("T")


def run_with_oom_backoff(run_once: Callable[[int, int, bool], T], batch_size: int, grad_accum: int, *,
                         resume: bool, on_oom: Callable[[dict], None] | None = None,
                         max_retries: int = MAX_OOM_RETRIES,
                         free_memory: Callable[[], None] = free_accelerator_memory) -> tuple[T, int, int]:
    """`run_once(batch_size, grad_accum, resume)`, retried on out-of-memory with half the batch.

    Each retry halves the per-device batch (at least 1) and raises accumulation so the effective batch
    stays the same, then resumes (from the last checkpoint, if any); `free_memory` runs between attempts.

    Returns:
        (run_once's result, the batch size and accumulation it succeeded with).
    Raises:
        RuntimeError: out of memory at batch 1, or after `max_retries` retries (the OOM is its cause).
        Anything else `run_once` raises, unchanged.
    """
    for attempt in range(max_retries + 1):
        try:
            return run_once(batch_size, grad_accum, resume), batch_size, grad_accum
        except Exception as exc:  # noqa: BLE001 - everything but out-of-memory is re-raised as is
            if not is_oom(exc):
                raise
            if batch_size == 1 or attempt == max_retries:
                raise RuntimeError(
                    f"out of GPU memory at per-device batch {batch_size} (after {attempt} halvings); lower "
                    f"model.max_seq_length, use load_in_4bit, or pick a smaller preset") from exc
            error = str(exc).splitlines()[0][:300]
        # outside the except block, so the traceback and the frames holding the model are released
        free_memory()
        effective = batch_size * grad_accum
        new_batch = max(1, batch_size // 2)
        new_accum = math.ceil(effective / new_batch)
        if on_oom is not None:
            on_oom({"attempt": attempt + 1, "error": error, "batch_size": new_batch, "grad_accum": new_accum,
                    "previous_batch_size": batch_size, "previous_grad_accum": grad_accum})
        batch_size, grad_accum, resume = new_batch, new_accum, True
    raise AssertionError("unreachable")


# ---- the run ---------------------------------------------------------------------------------------

def _sft_config(cfg: TrainConfig, out_dir: Path, batch: int, accum: int, evaluate: bool, cuda: bool):
    from trl import SFTConfig

    t = cfg.training
    return SFTConfig(
        output_dir=str(out_dir / CHECKPOINTS),
        per_device_train_batch_size=batch, per_device_eval_batch_size=batch, gradient_accumulation_steps=accum,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps, optim=t.optim, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5 folded warmup_ratio into warmup_steps: below 1 is a ratio
        bf16=t.bf16, fp16=t.fp16,  # set explicitly: TRL's default turns bf16 on
        # unsloth installs its own checkpointing in get_peft_model; TRL's default turns this on
        gradient_checkpointing=t.gradient_checkpointing and cfg.engine != "unsloth",
        logging_steps=t.logging_steps,
        eval_strategy="steps" if evaluate else "no", eval_steps=t.eval_steps,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        seed=t.seed, max_length=cfg.model.max_seq_length,
        completion_only_loss=True,
        report_to="none",  # TensorBoard is added as a callback, to write where DocTune wants it
        use_cpu=not cuda, dataloader_pin_memory=cuda, disable_tqdm=True,
    )


def train_adapter(cfg: TrainConfig, train_rows: list[dict], val_rows: list[dict], out_dir: Path, *,
                  sink: MetricSink, stop: threading.Event | None = None, resume: bool = False,
                  base_model_path: Path | None = None, dataset_version: str | None = None,
                  init_adapter: Path | None = None) -> TrainResult:
    """Train a LoRA adapter on `train_rows`, evaluating on `val_rows`, into `out_dir`.

    Args:
        cfg: the config (a preset, maybe overridden); fitted here to the machine with `resolve_for_hardware`.
        train_rows, val_rows: DocTune dataset rows (instruction, input, output, messages). `cfg.data` chooses
            which train rows are used (`select_training_rows`) and how many general rows are mixed in (`replay`).
        out_dir: the run's folder: checkpoints/, tensorboard/, and adapter/ on completion.
        sink: receives metrics every logging step and events (start, oom, cancelled, completed, ...).
        stop: set it to cancel; the run saves a checkpoint and returns `cancelled`.
        resume: continue from the last checkpoint in out_dir (a fresh start, reported, when there is none).
        base_model_path: the base model's folder, overriding `cfg.model.name_or_path` (e.g. a built tiny model).
        dataset_version: named in error messages.
        init_adapter: an earlier run's adapter folder to continue: its weights start this run's adapter (a resume
            from a checkpoint then loads the checkpoint's over them). Same base and LoRA shape as `cfg`.

    Raises:
        ValueError: no train rows, malformed rows, or out_dir holds another run's checkpoints and resume is off.
        ConfigError: an invalid config, a GPU preset without a GPU, a model not on this machine, or a
            max_seq_length above the model's context. All checked before out_dir is written.
    """
    cfg.validate()
    if not train_rows:
        raise ValueError(f"dataset version {dataset_version or '(unnamed)'} has no train samples; curate more "
                         f"(`doctune synth` / `doctune curate`) or pick another version (`doctune datasets`)")
    available = len(train_rows)
    train_rows = select_training_rows(train_rows, cfg.data, cfg.training.seed)
    if not train_rows:
        raise ValueError(f"the data settings {cfg.data} leave none of the {available} train samples of dataset "
                         f"version {dataset_version or '(unnamed)'}; widen data.tasks or data.max_sample_tokens")
    replay = replay_rows(cfg.data.replay, len(train_rows), cfg.training.seed)
    if cfg.data.max_val_samples is not None and len(val_rows) > cfg.data.max_val_samples:
        order = sorted(range(len(val_rows)), key=lambda i: hashlib.sha256(
            f"{cfg.training.seed}:{val_rows[i].get('sample_id', i)}".encode()).hexdigest())
        val_rows = [val_rows[i] for i in sorted(order[:cfg.data.max_val_samples])]
    hardware = detect_hardware()
    cfg = resolve_for_hardware(cfg, **hardware)
    cuda = hardware["cuda"]
    out_dir = Path(out_dir)
    if cfg.engine == "unsloth":
        os.environ.update(unsloth_environment(out_dir))
        import unsloth  # noqa: F401  - before anything below imports transformers, TRL or peft, which it patches
    model_path = resolve_model_path(cfg.model.name_or_path, base_model_path)
    _check_model(cfg, model_path)
    checkpoints = out_dir / CHECKPOINTS
    if not resume and _last_checkpoint(checkpoints) is not None:
        raise ValueError(f"{out_dir} already holds checkpoints of an earlier run; resume it (resume=True) or "
                         f"train into an empty folder")
    train_ds = rows_to_dataset(train_rows + replay)
    val_ds = rows_to_dataset(val_rows) if val_rows else None

    out_dir.mkdir(parents=True, exist_ok=True)
    events = _Events(sink)
    events("start", engine=cfg.engine, device="cuda" if cuda else "cpu", model=str(model_path),
           train_rows=len(train_rows), replay_rows=len(replay), available_rows=available, val_rows=len(val_rows),
           chunks=len({r.get("chunk_id") for r in train_rows}), resume=resume)
    build_model = build_unsloth_model if cfg.engine == "unsloth" else build_hf_model
    if not cuda:
        _let_trl_run_on_cpu()

    def run_once(batch: int, accum: int, resume_now: bool):
        model, tokenizer = build_model(cfg, model_path)
        if init_adapter is not None:
            load_adapter_weights(model, init_adapter)
            events("init_adapter", adapter=str(init_adapter))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        events("model", trainable_params=trainable, total_params=sum(p.numel() for p in model.parameters()))
        callback = _sink_callback(sink, stop, cuda)
        from transformers import PrinterCallback
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=model, args=_sft_config(cfg, out_dir, batch, accum, val_ds is not None, cuda),
            train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer,
            callbacks=[callback, _tensorboard_callback(out_dir / TENSORBOARD)])
        trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log; the sink is the channel
        checkpoint = _last_checkpoint(checkpoints) if resume_now else None
        if resume_now and checkpoint is None:
            events("resume_without_checkpoint", reason=f"no checkpoint in {checkpoints}; starting from step 0")
        elif checkpoint is not None:
            events("resume", checkpoint=str(checkpoint))
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        return trainer, callback

    (trainer, callback), batch, accum = run_with_oom_backoff(
        run_once, cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps,
        resume=resume, on_oom=lambda detail: events("oom", **detail),
        free_memory=free_unsloth_memory if cfg.engine == "unsloth" else free_accelerator_memory)

    state = trainer.state
    last_checkpoint = _last_checkpoint(checkpoints)
    adapter_dir = None
    if callback.cancelled_at is not None:
        events("cancelled", step=state.global_step, checkpoint=str(last_checkpoint))
    else:
        adapter_dir = _save_adapter(trainer, cfg, model_path, out_dir, train_rows + replay, val_rows, init_adapter)
        events("completed", step=state.global_step, adapter_dir=str(adapter_dir))
    return TrainResult(
        status="cancelled" if callback.cancelled_at is not None else "completed",
        global_step=state.global_step, epochs_done=float(state.epoch or 0.0),
        train_loss=callback.last_loss, eval_loss=callback.last_eval_loss, adapter_dir=adapter_dir,
        last_checkpoint=last_checkpoint, batch_size=batch, grad_accum=accum, events=events.items)


def _last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json after the weights, optimizer,
    scheduler and RNG state, so a checkpoint without a readable one was cut off mid-save (a killed run):
    transformers' own get_last_checkpoint would pick it and the resume would fail."""
    if not checkpoints.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in checkpoints.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return path
    return None


def checkpoint_history(run_dir: Path) -> tuple[int, list[tuple[int, str, float]]] | None:
    """(step, metric rows) of the run's newest complete checkpoint: what the Trainer had logged up to it.

    A run killed mid-training loses the metrics it had not yet handed to the store; the checkpoint it
    resumes from still has them in `trainer_state.json`."""
    checkpoint = _last_checkpoint(run_dir / CHECKPOINTS)
    if checkpoint is None:
        return None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    rows = [(int(entry["step"]), name, float(value)) for entry in state.get("log_history", [])
            for name, value in entry.items()
            if name != "step" and isinstance(value, (int, float)) and value == value]
    return int(state["global_step"]), rows


def _save_adapter(trainer, cfg: TrainConfig, model_path: Path, out_dir: Path, train_rows, val_rows,
                  init_adapter: Path | None = None) -> Path:
    """Adapter weights (safetensors), tokenizer and the resolved config, written aside and renamed into
    place, so an `adapter/` folder is always complete."""
    staging, final = out_dir / (ADAPTER + ".partial"), out_dir / ADAPTER
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(staging)
    trainer.processing_class.save_pretrained(staging)
    end_of_turn = generation_config_with_end_of_turn(trainer.model.get_base_model(), trainer.processing_class)
    end_of_turn.save_pretrained(staging)
    record = {"train_config": cfg.to_dict(), "base_model_path": str(model_path),
              "global_step": trainer.state.global_step, "train_rows": len(train_rows), "val_rows": len(val_rows),
              "init_adapter": str(init_adapter) if init_adapter else None}
    (staging / RUN_CONFIG_FILE).write_text(json.dumps(record, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


# ---- after training --------------------------------------------------------------------------------

def generation_config_with_end_of_turn(model, tokenizer):
    """A copy of `model`'s generation config that stops at the chat template's end of turn too
    (`backend.chat.stop_token_ids`), so whatever loads the adapter or the merged model stops where training
    taught it to."""
    config = copy.deepcopy(model.generation_config)
    config.eos_token_id = stop_token_ids(tokenizer, config.eos_token_id)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def base_of(adapter_dir: Path) -> Path:
    """The base model folder an adapter was trained on (its run record's `base_model_path`)."""
    record = json.loads((Path(adapter_dir) / RUN_CONFIG_FILE).read_text())
    return Path(record["base_model_path"])


def merge_to_16bit(adapter_dir: Path, base: str | Path | None, out: Path, dtype: str = "bf16") -> Path:
    """The base model with the adapter merged in (peft `merge_and_unload`), saved to `out` in `dtype`.

    The base is loaded in 16-bit even when it was trained in 4-bit, so the merged weights are not quantised.
    Its generation config stops at the chat template's end of turn too (`generation_config_with_end_of_turn`).
    `base` None: the base recorded in the adapter's doctune_train_config.json. `dtype`: bf16, fp16 or fp32.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = base_of(adapter_dir) if base is None else resolve_model_path(str(base))
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=TORCH_DTYPES[dtype], local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    merged.generation_config = generation_config_with_end_of_turn(merged, tokenizer)
    out = Path(out)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
