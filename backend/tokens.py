"""Token counting: the target model's own tokenizer when it is on this machine, a fast estimate otherwise.

Chunks are bounded in the tokens the model will see. The tokenizer is looked up locally only
(a folder, a `tokenizer.json`, or a model already in the Hugging Face cache); nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

# Words, single digits (Qwen and Llama tokenizers split numbers into digits) and single symbols:
# within ~15% of Qwen2.5's BPE counts on English prose and Python source.
_ESTIMATE = re.compile(r"[A-Za-z]{1,8}|\d|[^\sA-Za-z\d]")


class TokenCounter:
    """Counts tokens with `tokenizers` (exact) or a regex estimate; `name` says which."""

    def __init__(self, tokenizer_file: Path | None = None):
        self._tok = None
        if tokenizer_file is not None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(tokenizer_file))
            self.name = f"tokenizer:{tokenizer_file.parent.name}"
        else:
            self.name = "estimate"

    def __call__(self, text: str) -> int:
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return len(_ESTIMATE.findall(text))


def find_local_tokenizer(spec: str | None) -> Path | None:
    """The `tokenizer.json` for `spec` on this machine, or None.

    `spec` may be a tokenizer.json path, a model folder, or a hub name such as `Qwen/Qwen2.5-3B`
    that is already in the Hugging Face cache.
    """
    if not spec:
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    repo = hub.expanduser() / ("models--" + spec.replace("/", "--"))
    found = sorted(repo.glob("snapshots/*/tokenizer.json"))
    return found[-1] if found else None


@lru_cache(maxsize=8)
def token_counter(spec: str | None) -> TokenCounter:
    """A cached counter per process (each Ray worker builds its own once)."""
    return TokenCounter(find_local_tokenizer(spec))


# Qwen2's pre-tokenizer: this split regex, then byte-level mapping (digits one at a time).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_bpe_tokenizer(texts, vocab_size: int, out_file: Path, special_tokens: list[str] | None = None) -> Path:
    """Train a byte-level BPE tokenizer with Qwen2's pre-tokenizer on `texts`; saves tokenizer.json.

    Used for the `tiny` model, built locally because nothing can be downloaded from a model hub.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens or [],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_file))
    return out_file
