"""The tiny model: built offline, reloads with the Auto classes, speaks ChatML like Qwen2.5."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.tiny_model import MARKER, build_tiny_model, ensure_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


def test_reloads_offline_with_the_auto_classes(tiny):
    tok = AutoTokenizer.from_pretrained(tiny, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny, local_files_only=True)
    cfg = model.config
    assert cfg.model_type == "qwen2" and cfg.num_hidden_layers == 2 and cfg.tie_word_embeddings
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2) and cfg.max_position_embeddings >= 1024
    assert cfg.vocab_size == len(tok) == 2048
    ids = tok("def quote(shipment): return 42", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids.input_ids.shape[1], cfg.vocab_size) and torch.isfinite(logits).all()


def test_qwen_special_tokens_and_pre_tokenizer(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tok(special, add_special_tokens=False).input_ids) == 1
    # Qwen's pre-tokenizer splits numbers into single digits
    pieces = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False).input_ids)
    assert pieces == ["1", "2", "3", "4", "5"]
    text = "Ports of Rotterdam — café ü\n    return x"
    assert tok.decode(tok(text).input_ids) == text


def test_chat_template_renders_chatml(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n")
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_generation_stops_at_the_end_of_the_turn(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tok = AutoTokenizer.from_pretrained(tiny)
    assert set(model.generation_config.eos_token_id) == {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}


def test_build_is_seeded(tmp_path, tiny):
    again = build_tiny_model(tmp_path / "again")
    a = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ensure_builds_once_and_rebuilds_an_unfinished_build(tmp_path):
    first = ensure_tiny_model(tmp_path)
    assert (first / MARKER).is_file()
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == first and weights.stat().st_mtime_ns == stamp
    (first / MARKER).unlink()  # as if the build had died before its marker
    assert ensure_tiny_model(tmp_path) == first and (first / MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging folder left behind
