"""What the CUDA device can do, on a CPU machine with the device's answers faked: bf16 from the compute
capability (as unsloth decides it), the precision a run then uses, and utilisation from the mapped index."""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import pytest
import torch

from backend.device import cuda_bf16_supported, gpu_utilisation_percent
from backend.train import detect_hardware, resource_metrics
from backend.train_config import load_preset, resolve_for_hardware


@pytest.fixture
def gpu(monkeypatch):
    """Fakes a CUDA device of the compute capability given to the returned function; torch's own
    `is_bf16_supported` is made to say yes, as it does (emulation counted) on a T4 or a V100."""
    def fake(capability: tuple[int, int]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return fake


@pytest.mark.parametrize("capability, bf16", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((8, 6), True),
                                              ((9, 0), True)])
def test_bf16_needs_ampere_whatever_torch_says_about_emulation(gpu, capability, bf16):
    gpu(capability)
    assert cuda_bf16_supported() is bf16
    assert detect_hardware()["bf16_supported"] is bf16


def test_no_cuda_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_bf16_supported() is False


@pytest.mark.parametrize("capability, dtype", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_the_seed_preset_trains_in_its_model_dtype(gpu, capability, dtype):
    gpu(capability)
    cfg = resolve_for_hardware(load_preset("seed"), **detect_hardware())
    assert cfg.model.dtype == dtype
    assert (cfg.training.bf16, cfg.training.fp16) == (dtype == "bf16", dtype == "fp16")


def consistent(cfg) -> bool:
    """unsloth's trainer check (unsloth/models/rl.py): a float16 model with bf16, or bfloat16 with fp16, raises."""
    t = cfg.training
    return not (cfg.model.dtype == "fp16" and t.bf16) and not (cfg.model.dtype == "bf16" and t.fp16)


@pytest.mark.parametrize("capability", [(7, 5), (8, 0), (9, 0)])
@pytest.mark.parametrize("dtype", ["auto", "bf16", "fp16", "fp32"])
@pytest.mark.parametrize("bf16, fp16", [(True, False), (False, True), (False, False)])
def test_every_user_choice_resolves_to_a_precision_unsloth_accepts(gpu, capability, dtype, bf16, fp16):
    gpu(capability)
    seed = load_preset("seed")
    cfg = replace(seed, model=replace(seed.model, dtype=dtype),
                  training=replace(seed.training, bf16=bf16, fp16=fp16))
    out = resolve_for_hardware(cfg, **detect_hardware())
    assert consistent(out)
    assert out.model.dtype in ("bf16", "fp16", "fp32")
    assert not (out.training.bf16 and capability[0] < 8)  # no bf16 anywhere before Ampere
    if dtype == "fp32":  # mixed precision over fp32 weights only where it was asked for
        assert (out.training.bf16 or out.training.fp16) == (bf16 or fp16)


def test_a_user_set_fp16_on_ampere_trains_in_fp16(gpu):
    gpu((8, 0))
    seed = load_preset("seed")  # bf16: true in the preset, as a user who only changed model.dtype leaves it
    out = resolve_for_hardware(replace(seed, model=replace(seed.model, dtype="fp16")), **detect_hardware())
    assert (out.model.dtype, out.training.bf16, out.training.fp16) == ("fp16", False, True)


def fake_nvml(monkeypatch, utilisation_by_nvml_index: list[int]):
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError_DriverNotLoaded = type("NVMLError_DriverNotLoaded", (Exception,), {})
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=utilisation_by_nvml_index[handle])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "pynvml", nvml, raising=False)
    monkeypatch.setattr(torch.cuda, "_HAS_PYNVML", True)


def test_utilisation_is_read_from_the_card_ray_gave_this_process(monkeypatch):
    # Ray gives the actor physical GPUs 2 and 3; torch numbers them 0 and 1, NVML numbers all four
    fake_nvml(monkeypatch, [10, 20, 30, 40])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert gpu_utilisation_percent() == 30.0
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert gpu_utilisation_percent() == 40.0


def test_resource_metrics_report_the_mapped_cards_utilisation(monkeypatch):
    import psutil

    fake_nvml(monkeypatch, [10, 20, 30, 40])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda: 0)
    assert resource_metrics(psutil.Process(), cuda=True)["gpu_util_percent"] == 40.0


def test_without_nvml_utilisation_is_left_out(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_HAS_PYNVML", False)
    assert gpu_utilisation_percent() is None
