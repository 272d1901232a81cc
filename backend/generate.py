"""Base vs tuned: generation and held-out loss with ONE model in memory, the LoRA adapter toggled.

    adapter dir ──load_for_eval──▶ PeftModel(base) + tokenizer (left padding)
        ──generate(prompts, adapter=True/False)──▶ texts      (`model.disable_adapter()` for the base)
        ──completion_losses(rows, adapter=True/False)──▶ per-row loss on the answer only (perplexity: exp)

Prompts come from `backend.chat` (`prompt_messages`, `to_prompt_completion`, `render_ids`), as training's do,
so evaluation sees exactly the conversation the adapter was trained on, and the loss covers exactly the tokens
training did (the last assistant turn with its end-of-turn). transformers and peft are imported inside
functions, as in `backend.train`; nothing here imports the trainer.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch

from backend.adapter_files import RUN_CONFIG_FILE, TORCH_DTYPES
from backend.base_models import resolve_model_path
from backend.chat import render_ids, stop_token_ids, to_prompt_completion
from backend.device import cuda_bf16_supported



# ---- loading ---------------------------------------------------------------------------------------

def load_for_eval(adapter_dir: Path, base_model_path: Path | str | None = None, device: str | None = None):
    """The adapter's base model with the adapter attached, in eval mode, and its tokenizer.

    Args:
        adapter_dir: a saved adapter (`train_adapter`'s out_dir/adapter, or any peft adapter folder).
        base_model_path: the base's folder (or `tiny`, or a cached hub name); by default the one recorded
            in the adapter's doctune_train_config.json.
        device: `cuda`, `cpu`, ...; CUDA when available by default.

    Returns:
        (peft model, tokenizer) — the tokenizer pads on the left and has a pad token. On CPU the base is fp32;
        on CUDA it is in the run's dtype, and 4-bit (bitsandbytes NF4) when the run trained in 4-bit.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    record_file = adapter_dir / RUN_CONFIG_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if base_model_path is None and "base_model_path" not in record:
        raise ValueError(f"{adapter_dir} has no {RUN_CONFIG_FILE} naming its base model; pass base_model_path")
    base = resolve_model_path(str(base_model_path if base_model_path is not None else record["base_model_path"]))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_cfg = record.get("train_config", {}).get("model", {})

    kwargs: dict = {"local_files_only": True, "dtype": torch.float32}
    if device.startswith("cuda"):
        dtype = TORCH_DTYPES.get(model_cfg.get("dtype", "auto"), "auto")
        if dtype == "auto":
            dtype = torch.bfloat16 if cuda_bf16_supported() else torch.float16
        kwargs["dtype"] = dtype
        if model_cfg.get("load_in_4bit"):  # evaluate what was trained: the same NF4 base
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype)
            kwargs["device_map"] = {"": torch.device(device).index or 0}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(device)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()

    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Left padding (generation continues right after each prompt) and a pad token (eos when none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---- helpers ---------------------------------------------------------------------------------------

def _adapter_context(model, adapter: bool):
    """`model.disable_adapter()` for the base; a plain (non-peft) model is the base already."""
    if hasattr(model, "disable_adapter"):
        return contextlib.nullcontext() if adapter else model.disable_adapter()
    if adapter:
        raise ValueError("adapter=True needs a peft model (load_for_eval); this model has no adapter")
    return contextlib.nullcontext()


def _device(model) -> torch.device:
    return next(model.parameters()).device


def stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer (evaluation and serving alike): the chat template's end of turn, the
    tokenizer's eos and the generation config's eos ids (`backend.chat.stop_token_ids`)."""
    return set(stop_token_ids(tokenizer, model.generation_config.eos_token_id))


# ---- generation ------------------------------------------------------------------------------------

def generation_kwargs(tokenizer, max_new_tokens: int, greedy: bool = True, stop: set[int] | None = None) -> dict:
    """`model.generate` settings of every answer DocTune generates (evaluation and serving alike); with `stop`
    (`stop_ids`), generation itself ends at the end of turn, so no further turns are invented and computed."""
    kwargs: dict = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if stop:
        kwargs["eos_token_id"] = sorted(stop)
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs["do_sample"] = True
    return kwargs


def answer_text(tokenizer, new_tokens: list[int], stop: set[int]) -> tuple[str, int]:
    """(the answer's text, how many tokens it has up to and including the first stop token) of generated ids."""
    n = next((k + 1 for k, t in enumerate(new_tokens) if t in stop), len(new_tokens))
    return tokenizer.decode(new_tokens[:n], skip_special_tokens=True).strip(), n


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[dict]], *, adapter: bool, batch_size: int = 8,
             max_new_tokens: int = 128, greedy: bool = True, seed: int = 0) -> list[dict]:
    """Answers to chat `prompts`, with the adapter on (tuned) or off (base), in the prompts' order.

    Prompts are rendered with the chat template and its generation prompt, sorted by length (longest first)
    into left-padded batches, so little padding is computed, then put back in order. Greedy decoding by
    default (deterministic); `greedy=False` samples with the generation config's settings, seeded by `seed`.

    Returns:
        one {"text": the new tokens decoded without special tokens, stripped, "new_tokens": how many were
        generated, up to and including the first stop token} per prompt.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prepare_tokenizer(tokenizer)
    device, stop = _device(model), stop_ids(model, tokenizer)
    encoded = [render_ids(tokenizer, p, generation_prompt=True) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    gen_kwargs = generation_kwargs(tokenizer, max_new_tokens, greedy, stop)
    if not greedy:
        torch.manual_seed(seed)
    out: list[dict | None] = [None] * len(prompts)
    with _adapter_context(model, adapter):
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding=True, return_tensors="pt")
            input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            generated = model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
            for row, i in zip(generated[:, input_ids.shape[1]:].tolist(), batch, strict=True):
                text, n = answer_text(tokenizer, row, stop)
                out[i] = {"text": text, "new_tokens": n}
    return out  # type: ignore[return-value]


# ---- held-out loss ---------------------------------------------------------------------------------

def completion_ids(tokenizer, row: dict, max_length: int = 1024) -> tuple[list[int], int]:
    """(token ids of prompt + answer, where the answer starts), tokenized as TRL's SFT trainer does.

    The answer starts where the tokenized prompt (with its generation prompt) and the tokenized whole
    conversation diverge; the sequence is cut to `max_length` from the end, as the trainer does.
    """
    example = to_prompt_completion(row)
    prompt = render_ids(tokenizer, example["prompt"], generation_prompt=True)
    full = render_ids(tokenizer, example["prompt"] + example["completion"], generation_prompt=False)
    start = 0
    while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
        start += 1
    return full[:max_length], start


LOSS_CHUNK_TOKENS = 1024
"""Answer positions put through the LM head at once: 1024 x Qwen's 151,936-row vocabulary is 0.6 GB in fp32,
where the whole batch's logits (8 x 1024 positions) would be 5 GB, which a 6 GB card does not have."""


def _decoder_and_head(model):
    """The causal LM's transformer body (hidden states out) and its LM head; through peft's wrapper, whose
    LoRA layers live inside the body, so `disable_adapter` still switches them."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.get_decoder(), lm.get_output_embeddings()


@torch.inference_mode()
def completion_losses(model, tokenizer, rows: list[dict], *, adapter: bool, batch_size: int = 8,
                      max_length: int = 1024, chunk_tokens: int = LOSS_CHUNK_TOKENS) -> list[float]:
    """Per row, the mean cross-entropy (nats/token) of the answer given its prompt; `math.exp` for perplexity.

    Only the completion tokens count (the last assistant turn and its end-of-turn, as in training); a row
    whose answer lies wholly beyond `max_length` gets NaN. Batches are right-padded (causal attention keeps
    padding out of every real token's context), rows sorted by length to pad little. The LM head is applied
    only to the hidden states of the positions that predict an answer token, `chunk_tokens` at a time, so the
    vocabulary-wide logits never exist for the whole batch (nor for the prompts at all).
    """
    device = _device(model)
    decoder, head = _decoder_and_head(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = [completion_ids(tokenizer, r, max_length) for r in rows]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    losses = [math.nan] * len(rows)
    with _adapter_context(model, adapter):
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(seqs[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, i in enumerate(batch):
                tokens = seqs[i][0]
                ids[j, :len(tokens)] = torch.tensor(tokens)
                mask[j, :len(tokens)] = 1
            # (row in batch, position) of every answer token; position - 1 is the state that predicts it
            where = [(j, p) for j, i in enumerate(batch) for p in range(max(seqs[i][1], 1), len(seqs[i][0]))]
            if not where:
                continue
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            rows_at = torch.tensor([j for j, _ in where], device=device)
            positions = torch.tensor([p for _, p in where], device=device)
            states = hidden[rows_at, positions - 1]
            del hidden
            targets = ids.to(device)[rows_at, positions]
            nll = torch.cat([torch.nn.functional.cross_entropy(
                head(states[k:k + chunk_tokens]).float(), targets[k:k + chunk_tokens], reduction="none")
                for k in range(0, len(where), chunk_tokens)])
            sums = torch.zeros(len(batch), device=device, dtype=nll.dtype).index_add_(0, rows_at, nll)
            counted = torch.bincount(rows_at, minlength=len(batch))
            for j, i in enumerate(batch):
                if counted[j] > 0:
                    losses[i] = float(sums[j] / counted[j])
    return losses


def perplexity(losses: list[float]) -> float:
    """exp of the token-unweighted mean of per-row losses (NaN rows left out)."""
    kept = [x for x in losses if not math.isnan(x)]
    return math.exp(sum(kept) / len(kept)) if kept else math.nan
