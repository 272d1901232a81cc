"""Generation stops at the chat template's end of turn for every preset's model, and the adapter's and the
merged model's generation configs say so (CPU, tiny model and SmolLM2).

Qwen2.5-3B is not on this machine (nothing is downloaded): its case is a tiny model made like it, a Qwen2
with Qwen's chat template whose tokenizer ends sequences with `<|endoftext|>` and whose generation config
stops only there, as Qwen2.5-3B's does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.base_models import ensure_smol_model
from backend.chat import end_of_turn_id, prompt_messages, stop_token_ids
from backend.generate import generate, load_for_eval
from backend.tiny_model import ensure_tiny_model
from backend.train import merge_to_16bit
from tests.backend.test_generate import ANSWER, fixed_answer_rows, random_adapter, train_fixed_answer

IM_END, ENDOFTEXT = "<|im_end|>", "<|endoftext|>"


@pytest.fixture(scope="module")
def qwen_base_like(tmp_path_factory) -> Path:
    """The tiny model with Qwen2.5-3B's stopping: generation config and tokenizer end at `<|endoftext|>` only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny = ensure_tiny_model(tmp_path_factory.mktemp("models"))
    out = tmp_path_factory.mktemp("qwen-base-like")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    model.generation_config.eos_token_id = endoftext
    assert tokenizer.eos_token == ENDOFTEXT
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def token(tokenizer, text: str) -> int:
    return tokenizer.convert_tokens_to_ids(text)


def test_the_end_of_turn_of_each_presets_template(qwen_base_like, smol_models):
    from transformers import AutoTokenizer

    for folder in (qwen_base_like, ensure_smol_model(smol_models)):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert end_of_turn_id(tokenizer) == token(tokenizer, IM_END)
        assert token(tokenizer, IM_END) in stop_token_ids(tokenizer, None)
    qwen = AutoTokenizer.from_pretrained(qwen_base_like)
    # Qwen2.5-3B's own generation config stops only at end of text; the stop set has both
    assert stop_token_ids(qwen, token(qwen, ENDOFTEXT)) == sorted({token(qwen, IM_END), token(qwen, ENDOFTEXT)})


def test_a_merged_qwen_base_stops_at_the_end_of_turn(qwen_base_like, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    adapter = random_adapter(qwen_base_like, tmp_path / "adapter")
    merged = merge_to_16bit(adapter, None, tmp_path / "merged", dtype="fp32")
    tokenizer = AutoTokenizer.from_pretrained(merged)
    eos = GenerationConfig.from_pretrained(merged).eos_token_id
    assert sorted(eos) == sorted({token(tokenizer, IM_END), token(tokenizer, ENDOFTEXT)})


@pytest.fixture(scope="module")
def tuned_qwen_base(tmp_path_factory, qwen_base_like):
    """The Qwen-base-like model trained on rows with one fixed answer (30 steps)."""
    return train_fixed_answer(qwen_base_like, tmp_path_factory.mktemp("run"))


@pytest.mark.slow
def test_the_adapter_records_the_end_of_turn_and_the_tuned_model_stops_there(tuned_qwen_base):
    adapter = tuned_qwen_base
    model, tokenizer = load_for_eval(adapter)
    config = json.loads((adapter / "generation_config.json").read_text())
    assert token(tokenizer, IM_END) in config["eos_token_id"]
    prompts = [prompt_messages(r) for r in fixed_answer_rows(4)]
    out = generate(model, tokenizer, prompts, adapter=True, max_new_tokens=64)
    answer_tokens = len(tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    for o in out:  # the answer learned, then its end of turn, and nothing invented after it
        assert o["text"] == ANSWER and o["new_tokens"] <= answer_tokens + 2 < 64
