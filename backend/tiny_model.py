"""The `tiny` model: a 2-layer Qwen2 with a BPE tokenizer trained here, so training runs without any download.

It has Qwen2.5's shape in miniature (grouped-query attention, SwiGLU MLP, tied embeddings), Qwen's
pre-tokenizer and special tokens, and Qwen2.5's ChatML template, so every code path a real Qwen model
takes (chat template, completion-only loss, LoRA on the seven projections, adapter saving) runs on a CPU.
Its weights are random: it learns the surface of the training data, not the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from backend.config import SAMPLE_REPO, resolve_home
from backend.tokens import train_bpe_tokenizer

TINY_VERSION = 1
"""Bumped whenever the recipe below changes, so cached builds are rebuilt rather than reused."""
MARKER = "doctune_tiny_model.json"
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
CORPUS_SUFFIXES = (".md", ".rst", ".py", ".txt")

# Qwen2.5's ChatML template, tools left out: a default system turn when the conversation has none, then
# `<|im_start|>role\ncontent<|im_end|>\n` per message, and `<|im_start|>assistant\n` as the generation prompt.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def sample_corpus() -> list[str]:
    """The bundled sample repository's prose and code (`.md .rst .py .txt`), in path order."""
    paths = sorted(p for p in SAMPLE_REPO.rglob("*") if p.suffix in CORPUS_SUFFIXES and p.is_file())
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def build_tiny_model(out_dir: Path, corpus_texts: list[str] | None = None, vocab_size: int = 2048,
                     seed: int = 0) -> Path:
    """Train the tokenizer, build the seeded 2-layer Qwen2, and save both into `out_dir`.

    Args:
        out_dir: folder written with `save_pretrained` (config, safetensors weights, tokenizer, chat template).
        corpus_texts: texts the tokenizer learns from; the sample repository's by default.
        vocab_size: BPE vocabulary, special tokens included.
        seed: weight initialisation.

    Returns:
        `out_dir`, loadable offline with `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained`.
    """
    import torch
    from tokenizers import Tokenizer, normalizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts if corpus_texts is not None else sample_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = train_bpe_tokenizer(texts, vocab_size, Path(tmp) / "tokenizer.json", SPECIAL_TOKENS)
        backend = Tokenizer.from_file(str(tok_file))
    backend.normalizer = normalizers.NFC()  # Qwen2's tokenizer normalises to NFC before splitting
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, unk_token=None, bos_token=None,
        extra_special_tokens=[IM_START, IM_END], model_max_length=1024, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=ids[ENDOFTEXT], pad_token_id=ids[ENDOFTEXT])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # generation stops at the end of the assistant's turn as well as at end of text, as with Qwen2.5-Instruct
    model.generation_config = GenerationConfig(eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
                                               pad_token_id=ids[ENDOFTEXT])
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def default_tiny_dir() -> Path:
    """Where `tiny` lives unless told otherwise: `models/` in the DocTune home."""
    return resolve_home() / "models"


def ensure_tiny_model(cache_dir: Path | None = None) -> Path:
    """The tiny model's folder under `cache_dir`, built on first use and reused afterwards.

    It is built in a temporary sibling folder and renamed into place with its marker file written last,
    so a folder with the marker is complete, and an interrupted build leaves nothing that looks usable.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_tiny_dir()
    target = cache_dir / f"tiny-qwen2-v{TINY_VERSION}"
    if (target / MARKER).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if target.exists():  # an earlier build died before its marker
        shutil.rmtree(target, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=cache_dir))
    try:
        build_tiny_model(staging)
        (staging / MARKER).write_text(json.dumps({"version": TINY_VERSION, "vocab_size": 2048, "seed": 0}))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / MARKER).is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
