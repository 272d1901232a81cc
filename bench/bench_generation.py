"""Generation throughput: DocTune's batched, length-sorted generation against one prompt at a time.

Both variants run in this process on the same model and the same prompts, greedy, so their outputs must
be identical (printed as outputs_match; a mismatch is reported, never asserted):

  single    `backend.generate.generate(..., batch_size=1)` per prompt, in a loop
  batched   one `generate` call over all prompts, --batch-size at a time, sorted by length, left-padded

Model: by default the tiny model (`backend.tiny_model`, built into a temp folder) with a LoRA adapter whose
weights are random (peft `init_lora_weights=False`: it changes outputs, as a trained one would), saved and
reloaded through `load_for_eval`, adapter on; or --adapter DIR, a trained adapter and its recorded base.
Prompts: --prompts synthetic DocTune rows (single-turn and two-turn, as in the training tests), through
`prompt_messages`. Device: CUDA when present (then peak GPU memory is reported per variant), else CPU.

Figures: tokens/s = generated tokens (up to and including each stop token) / wall time, best of --reps
(each variant's first call is a warm-up and not timed); speedup = batched / single tokens/s, in this run.

    .venv/bin/python bench/bench_generation.py [--prompts 32] [--max-new-tokens 64] [--batch-size 8] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.adapter_files import RUN_CONFIG_FILE  # noqa: E402
from backend.chat import prompt_messages  # noqa: E402
from backend.generate import generate, load_for_eval  # noqa: E402


def synthetic_rows(n: int) -> list[dict]:
    """Single-turn rows (some with input) and two-turn conversations, of varied lengths."""
    rows = []
    for i in range(n):
        if i % 5 == 4:
            rows.append({"instruction": "", "input": "", "output": "", "messages": [
                {"role": "user", "content": f"What does berth {i} hold?"},
                {"role": "assistant", "content": f"Berth {i} holds container TM-{i}."},
                {"role": "user", "content": "And its weight?"},
                {"role": "assistant", "content": f"It weighs {i} tonnes."}]})
        else:
            rows.append({"instruction": f"What does tidemark.quote_{i}() return?" + " Explain." * (i % 7),
                         "input": f"quote_{i}(weight={i})" if i % 2 else "",
                         "output": f"It returns a Quote for {i} tonnes.", "messages": None})
    return rows


def random_adapter(base: Path, out: Path, seed: int = 0) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / RUN_CONFIG_FILE).write_text(json.dumps({"base_model_path": str(base), "train_config": {
        "model": {"dtype": "fp32", "load_in_4bit": False}}}))
    return out


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--adapter", type=Path, default=None, help="a trained adapter (default: tiny + random LoRA)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.adapter is None:
            from backend.tiny_model import ensure_tiny_model

            adapter_dir = random_adapter(ensure_tiny_model(Path(tmp) / "models"), Path(tmp) / "adapter")
        else:
            adapter_dir = args.adapter
        model, tok = load_for_eval(adapter_dir)
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    prompts = [prompt_messages(r) for r in synthetic_rows(args.prompts)]
    lengths = [len(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True)["input_ids"])
               for p in prompts]
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"model {adapter_dir}, device {name}, {len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, greedy")

    def single():
        return [generate(model, tok, [p], adapter=True, batch_size=1, max_new_tokens=args.max_new_tokens)[0]
                for p in prompts]

    def batched():
        return generate(model, tok, prompts, adapter=True, batch_size=args.batch_size,
                        max_new_tokens=args.max_new_tokens)

    results, outputs = {}, {}
    for label, fn in (("single", single), ("batched", batched)):
        generate(model, tok, prompts[:2], adapter=True, batch_size=2, max_new_tokens=4)  # warm-up
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        best = None
        for _ in range(args.reps):
            sync(cuda)
            t = time.perf_counter()
            out = fn()
            sync(cuda)
            seconds = time.perf_counter() - t
            best = seconds if best is None else min(best, seconds)
        tokens = sum(o["new_tokens"] for o in out)
        outputs[label] = out
        results[label] = tokens / best
        extra = f"  peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
        results[label + "_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        print(f"{label:<8} {best:7.2f} s  {tokens:6d} tokens  {tokens / best:9.1f} tokens/s{extra}")

    match = [o["text"] for o in outputs["single"]] == [o["text"] for o in outputs["batched"]]
    if not match:
        diff = sum(a["text"] != b["text"] for a, b in zip(outputs["single"], outputs["batched"], strict=True))
        print(f"outputs differ for {diff} of {len(prompts)} prompts (batched numerics; greedy ties)")
    line = {"device": "cuda" if cuda else "cpu", "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size, "tokens_per_s_batched": round(results["batched"], 1),
            "tokens_per_s_single": round(results["single"], 1),
            "speedup": round(results["batched"] / results["single"], 2), "outputs_match": match}
    if cuda:
        line["peak_mb_batched"] = round(results["batched_peak_mb"])
        line["peak_mb_single"] = round(results["single_peak_mb"])
    print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
