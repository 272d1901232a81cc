"""Base vs tuned generation and held-out loss, one model in memory with the adapter toggled (CPU, tiny model).

Fast tests use an adapter whose LoRA weights are random (peft's `init_lora_weights=False`), so it changes
the outputs without training; the slow ones train the tiny model for 30 steps on rows with one fixed answer.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from backend.adapter_files import RUN_CONFIG_FILE
from backend.chat import prompt_messages, to_prompt_completion
from backend.generate import completion_ids, completion_losses, generate, load_for_eval, perplexity
from backend.tiny_model import ensure_tiny_model
from backend.train import train_adapter
from backend.train_config import load_preset
from tests.backend.test_train import RecordingSink, synthetic_rows

ANSWER = "Use tidemark.berth() and ZEBRA."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


def random_adapter(base: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA adapter with random A and B (nonzero, unlike a fresh one), saved as `train_adapter` saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
        task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / RUN_CONFIG_FILE).write_text(json.dumps({"base_model_path": str(base), "train_config": {
        "model": {"dtype": "fp32", "load_in_4bit": False}}}))
    return out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny):
    model, tok = load_for_eval(random_adapter(tiny, tmp_path_factory.mktemp("adapter")))
    return model, tok


@pytest.fixture(scope="module")
def prompts():
    return [prompt_messages(r) for r in synthetic_rows(12)]


# ---- loading and prompts ---------------------------------------------------------------------------

def test_load_for_eval(loaded):
    model, tok = loaded
    assert not model.training and tok.padding_side == "left" and tok.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32 and next(model.parameters()).device.type == "cpu"
    assert hasattr(model, "disable_adapter")


def test_prompts_match_training():
    for row in synthetic_rows(10):
        assert prompt_messages(row) == to_prompt_completion(row)["prompt"]
        assert prompt_messages(row)[-1]["role"] == "user"


# ---- generation ------------------------------------------------------------------------------------

def test_greedy_generation_is_deterministic_and_batching_does_not_change_it(loaded, prompts):
    model, tok = loaded
    for adapter in (True, False):
        batched = generate(model, tok, prompts, adapter=adapter, batch_size=5, max_new_tokens=16)
        again = generate(model, tok, prompts, adapter=adapter, batch_size=5, max_new_tokens=16)
        single = [generate(model, tok, [p], adapter=adapter, batch_size=1, max_new_tokens=16)[0] for p in prompts]
        assert batched == again
        assert [o["text"] for o in batched] == [o["text"] for o in single]
        assert all(1 <= o["new_tokens"] <= 16 for o in batched)


def test_order_is_preserved(loaded, prompts):
    model, tok = loaded
    reordered = prompts[::-1]
    forward = generate(model, tok, prompts, adapter=True, batch_size=4, max_new_tokens=8)
    backward = generate(model, tok, reordered, adapter=True, batch_size=4, max_new_tokens=8)
    assert backward == forward[::-1]
    # each answer sits at its prompt's index whatever the batching (sorted by length inside)
    singles = [generate(model, tok, [p], adapter=True, batch_size=1, max_new_tokens=8)[0]["text"] for p in prompts]
    assert [o["text"] for o in forward] == singles


def test_disabling_the_adapter_gives_the_plain_base_model(loaded, prompts, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = loaded
    plain = AutoModelForCausalLM.from_pretrained(tiny).eval()
    base_tok = AutoTokenizer.from_pretrained(tiny)
    base = generate(model, tok, prompts, adapter=False, max_new_tokens=12)
    assert base == generate(plain, base_tok, prompts, adapter=False, max_new_tokens=12)
    tuned = generate(model, tok, prompts, adapter=True, max_new_tokens=12)
    assert tuned != base  # the random adapter is on again after the context
    assert generate(model, tok, prompts, adapter=False, max_new_tokens=12) == base
    with pytest.raises(ValueError, match="peft"):
        generate(plain, base_tok, prompts, adapter=True)
    # losses too: the base through disable_adapter is the plain base
    rows = synthetic_rows(6)
    assert completion_losses(model, tok, rows, adapter=False) == pytest.approx(
        completion_losses(plain, base_tok, rows, adapter=False), abs=1e-5)


def test_sampling_is_seeded(loaded, prompts):
    model, tok = loaded
    a = generate(model, tok, prompts[:4], adapter=True, greedy=False, seed=1, max_new_tokens=8)
    b = generate(model, tok, prompts[:4], adapter=True, greedy=False, seed=1, max_new_tokens=8)
    assert a == b


# ---- loss ------------------------------------------------------------------------------------------

def test_loss_counts_only_the_completion_tokens(loaded):
    model, tok = loaded
    row = synthetic_rows(5)[4]  # a two-turn conversation: the first answer is prompt, not completion
    example = to_prompt_completion(row)
    text = tok.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    prompt_text = tok.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)
    assert text.startswith(prompt_text)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
    assert tok.decode(ids[n_prompt:]) == row["messages"][-1]["content"] + "<|im_end|>\n"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    manual = torch.nn.functional.cross_entropy(logits[n_prompt - 1:-1], torch.tensor(ids[n_prompt:])).item()
    everything = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item()
    [loss] = completion_losses(model, tok, [row], adapter=True)
    assert loss == pytest.approx(manual, rel=1e-5) and abs(loss - everything) > 1e-3
    # batched with rows of other lengths (padding) gives the same per-row loss
    rows = synthetic_rows(9)
    batched = completion_losses(model, tok, rows, adapter=True, batch_size=4)
    assert batched[4] == pytest.approx(loss, rel=1e-5)
    assert batched == pytest.approx([completion_losses(model, tok, [r], adapter=True)[0] for r in rows], rel=1e-5)
    assert math.isfinite(perplexity(batched)) and perplexity(batched) > 1


def full_logits_losses(model, tok, rows, max_length=1024):
    """The loss as it was computed before: every position's full-vocabulary logits, then cross-entropy."""
    out = []
    for row in rows:
        ids, answer_at = completion_ids(tok, row, max_length)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        start = max(answer_at, 1)
        out.append(torch.nn.functional.cross_entropy(logits[start - 1:-1], torch.tensor(ids[start:])).item())
    return out


def test_the_loss_puts_only_answer_positions_through_the_lm_head_in_bounded_chunks(loaded):
    model, tok = loaded
    rows = synthetic_rows(9)
    answer_tokens = []
    for row in rows:
        ids, answer_at = completion_ids(tok, row)
        answer_tokens.append(len(ids) - max(answer_at, 1))
    seen = []
    head = model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    try:
        losses = completion_losses(model, tok, rows, adapter=True, batch_size=4, chunk_tokens=16)
    finally:
        hook.remove()
    vocab = head.weight.shape[0]
    # the head saw 2-D (positions, hidden) inputs: each at most one chunk, all of them exactly the answer tokens
    assert all(len(inp) == 2 and inp[0] <= 16 and out == (inp[0], vocab) for inp, out in seen)
    assert sum(inp[0] for inp, _ in seen) == sum(answer_tokens)
    assert sum(answer_tokens) < sum(len(completion_ids(tok, r)[0]) for r in rows)  # prompts left out
    # the same numbers as the full-logits computation, with the adapter on and off
    assert losses == pytest.approx(full_logits_losses(model, tok, rows), rel=1e-5)
    with model.disable_adapter():
        base_reference = full_logits_losses(model, tok, rows)
    assert completion_losses(model, tok, rows, adapter=False) == pytest.approx(base_reference, rel=1e-5)
    assert base_reference != pytest.approx(losses, rel=1e-3)


# ---- a trained adapter -----------------------------------------------------------------------------

def fixed_answer_rows(n: int = 32) -> list[dict]:
    return [{"instruction": f"How do I dock ship {i} at tidemark?", "input": "", "output": ANSWER,
             "messages": None} for i in range(n)]


def train_fixed_answer(base: Path, run_dir: Path) -> Path:
    """The adapter of `base` trained on rows with one fixed answer (30 steps, constant lr 1e-2)."""
    cfg = load_preset("tiny")
    cfg = replace(cfg, training=replace(cfg.training, learning_rate=1e-2, max_steps=30, save_steps=30,
                                        lr_scheduler_type="constant"))
    result = train_adapter(cfg, fixed_answer_rows(), [], run_dir, sink=RecordingSink(), base_model_path=base)
    assert result.status == "completed"
    return result.adapter_dir


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny):
    return load_for_eval(train_fixed_answer(tiny, tmp_path_factory.mktemp("run")))  # the base from its record


@pytest.mark.slow
def test_training_changes_outputs_and_lowers_the_completion_loss(tuned):
    model, tok = tuned
    held_out = [{"instruction": f"How do I dock ship {i} at tidemark?", "input": "", "output": ANSWER,
                 "messages": None} for i in range(100, 108)]
    prompts = [prompt_messages(r) for r in held_out]
    base = generate(model, tok, prompts, adapter=False, max_new_tokens=24)
    tuned_out = generate(model, tok, prompts, adapter=True, max_new_tokens=24)
    assert [o["text"] for o in base] != [o["text"] for o in tuned_out]
    assert sum(o["text"] == ANSWER for o in tuned_out) >= len(prompts) // 2, tuned_out
    base_loss = completion_losses(model, tok, held_out, adapter=False)
    tuned_loss = completion_losses(model, tok, held_out, adapter=True)
    assert all(t < b for t, b in zip(tuned_loss, base_loss, strict=True))
    # the random base's logits stay flat (loss ~6.35 after training, ~7.64 before, log(vocab) = 7.6),
    # yet the answer is every token's argmax; the per-row loss here is the trainer's own loss on these rows
    assert sum(base_loss) / len(base_loss) - sum(tuned_loss) / len(tuned_loss) > 0.5
    assert perplexity(tuned_loss) < perplexity(base_loss) / 2
