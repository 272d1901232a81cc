"""Training config: every preset loads, the seed preset is the reference setup, hardware resolution."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import yaml

from backend.config import REPO_ROOT
from backend.config_base import ConfigError
from backend.train_config import (
    ALL_PROJECTIONS,
    PRESETS_DIR,
    TrainConfig,
    list_presets,
    load_preset,
    resolve_for_hardware,
)

CPU = {"cuda": False, "bf16_supported": False, "unsloth_available": False}
AMPERE = {"cuda": True, "bf16_supported": True, "unsloth_available": True}
T4 = {"cuda": True, "bf16_supported": False, "unsloth_available": False}


@pytest.mark.parametrize("path", sorted(PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(path):
    cfg = load_preset(path.stem)
    assert cfg.preset == path.stem
    assert cfg.problems() == []
    # every setting is spelled out, so a preset reads on its own and never leans on a changed default
    data = yaml.safe_load(path.read_text())
    for section in ("model", "lora", "training"):
        assert set(data[section]) == set(cfg.to_dict()[section]), f"{path.name}: {section} is not complete"
    assert "#" in path.read_text()  # trade-offs are commented


def test_the_expected_presets_exist():
    assert {"seed", "tiny", "qwen2.5-coder-1.5b", "qwen2.5-coder-7b"} <= set(list_presets())


def test_seed_is_the_reference_setup():
    cfg = load_preset("seed")
    assert cfg.engine == "auto"
    m, lora, t = cfg.model, cfg.lora, cfg.training
    assert (m.name_or_path, m.load_in_4bit, m.max_seq_length, m.requires_gpu) == ("Qwen/Qwen2.5-3B", True, 2048, True)
    assert (lora.r, lora.alpha, lora.dropout, lora.bias) == (16, 16, 0.0, "none")
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert t.learning_rate == 2e-4 and t.lr_scheduler_type == "cosine"
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.num_train_epochs) == (4, 4, 3)
    assert t.optim == "adamw_torch" and t.weight_decay == 0.01 and t.bf16 is True and t.max_steps == -1


def test_tiny_preset_runs_on_cpu():
    cfg = load_preset("tiny")
    assert cfg.model.name_or_path == "tiny" and not cfg.model.requires_gpu and not cfg.model.load_in_4bit
    assert cfg.engine == "hf" and cfg.model.dtype == "fp32" and cfg.lora.target_modules == ALL_PROJECTIONS
    assert (cfg.lora.r, cfg.lora.alpha) == (8, 16) and cfg.training.logging_steps == 1


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_preset("qwen-9000")
    assert "qwen-9000" in str(err.value)
    for name in list_presets():
        assert name in str(err.value)


def test_a_file_overrides_parts_of_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: qwen2.5-coder-7b\ntraining:\n  learning_rate: 5.0e-5\n  num_train_epochs: 1\n"
                    "lora:\n  r: 32\n")
    cfg = TrainConfig.from_file(path)
    base = load_preset("qwen2.5-coder-7b")
    assert cfg.preset == "qwen2.5-coder-7b"
    assert (cfg.training.learning_rate, cfg.training.num_train_epochs, cfg.lora.r) == (5e-5, 1, 32)
    assert cfg.model == base.model and cfg.lora.alpha == base.lora.alpha
    assert cfg.training.per_device_train_batch_size == base.training.per_device_train_batch_size


def test_unknown_keys_are_all_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("preset: tiny\nengin: hf\nlora:\n  rank: 8\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_file(path)
    assert len(err.value.problems) == 3
    assert all(word in str(err.value) for word in ("engin", "rank", "lr"))


def test_validate_lists_every_problem_with_its_fix():
    cfg = load_preset("tiny")
    bad = replace(cfg, engine="jax",
                  lora=replace(cfg.lora, r=0, bias="some", target_modules=[]),
                  training=replace(cfg.training, learning_rate=0, bf16=True, fp16=True, warmup_ratio=1.5,
                                   optim="adam9000", max_steps=0))
    with pytest.raises(ConfigError) as err:
        bad.validate()
    assert len(err.value.problems) == 9
    assert "use one of auto, unsloth, hf" in str(err.value)


def test_resolve_auto_engine():
    seed = load_preset("seed")
    assert resolve_for_hardware(seed, **AMPERE).engine == "unsloth"
    assert resolve_for_hardware(seed, **{**AMPERE, "unsloth_available": False}).engine == "hf"
    assert resolve_for_hardware(load_preset("tiny"), **AMPERE).engine == "hf"  # asked for explicitly


def test_resolve_keeps_bf16_where_the_gpu_has_it():
    cfg = resolve_for_hardware(load_preset("seed"), **AMPERE)
    assert cfg.model.dtype == "bf16" and cfg.training.bf16 and not cfg.training.fp16 and cfg.model.load_in_4bit


def test_resolve_turns_bf16_into_fp16_on_older_gpus():
    cfg = resolve_for_hardware(load_preset("seed"), **T4)
    assert cfg.model.dtype == "fp16" and not cfg.training.bf16 and cfg.training.fp16
    assert cfg.model.load_in_4bit and cfg.engine == "hf"
    explicit = replace(load_preset("seed"), model=replace(load_preset("seed").model, dtype="bf16"))
    assert resolve_for_hardware(explicit, **T4).model.dtype == "fp16"


def test_resolve_on_cpu_is_fp32_without_4bit():
    gpu_optional = replace(load_preset("qwen2.5-coder-1.5b"),
                           model=replace(load_preset("qwen2.5-coder-1.5b").model, requires_gpu=False))
    cfg = resolve_for_hardware(gpu_optional, **CPU)
    assert cfg.engine == "hf" and cfg.model.dtype == "fp32" and not cfg.model.load_in_4bit
    assert not cfg.training.bf16 and not cfg.training.fp16
    assert cfg.training.optim == "adamw_torch"  # the preset's adamw_8bit needs bitsandbytes on CUDA
    assert resolve_for_hardware(load_preset("tiny"), **CPU).model.dtype == "fp32"


def test_a_gpu_preset_on_cpu_names_the_preset_and_the_way_out():
    with pytest.raises(ConfigError) as err:
        resolve_for_hardware(load_preset("qwen2.5-coder-7b"), **CPU)
    assert "'qwen2.5-coder-7b'" in str(err.value) and "--preset smol" in str(err.value)


def test_unsloth_cannot_be_forced_where_it_cannot_run():
    cfg = replace(load_preset("tiny"), engine="unsloth")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_for_hardware(cfg, **CPU)
    with pytest.raises(ConfigError, match="not installed"):
        resolve_for_hardware(cfg, **T4)


def test_loading_a_config_imports_no_torch():
    code = "import sys, backend.train_config as t; t.load_preset('seed'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
