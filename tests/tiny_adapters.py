"""LoRA adapters made in a second, not trained: random (non-zero) A and B on the tiny base, so two of them answer
differently; and the completed training run's row that holds one, as `doctune train` leaves it."""

from __future__ import annotations

import json
from pathlib import Path

from backend.adapter_files import RUN_CONFIG_FILE


def random_adapter(base: Path, seed: int, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    (out / RUN_CONFIG_FILE).write_text(json.dumps({"base_model_path": str(base)}))
    return out


def trained_run(store, run_id: str, adapter: Path, project: str = "s", dataset: str = "v1") -> str:
    """A completed training run's row (base `tiny`) holding `adapter`; `store` is a StoreClient or a Store."""
    store.create_run(run_id, "train", project, {"train": {"model": {"name_or_path": "tiny"}}, "dataset": dataset})
    store.finish_run(run_id, "completed", {"adapter": str(adapter)})
    return run_id
