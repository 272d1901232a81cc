"""Synthesis throughput against a rate-limited API: DocTune's limiter against a naive sequential client.

The endpoint is the fake OpenAI-compatible server of `tests/fake_llm.py` on 127.0.0.1, with a fixed
latency per answer and an enforced requests-per-minute limit (sliding window; over it, 429 with
Retry-After). The limit is scaled to a short window (default 600 rpm over 6 s: 60 requests per 6 s) so
the whole bench takes about a minute. The prompts are DocTune's own: the first N units that
`backend.synthesize.plan_units` renders from the bundled sample repository, ingested into a temp home.

  doctune   `DocTune.synth` (openai generator; shared Limiter actor told the same rpm and window,
            `--concurrency` in flight), on a fresh server instance
  naive     the plain sync `openai.OpenAI` client (max_retries=0), one request at a time over the same
            prompts, sleeping Retry-After on a 429 (bounded retries), capped at --naive-requests
            requests or --naive-seconds seconds, on another fresh server instance

Each variant's limit is min(rpm, concurrency × 60 / latency): the RPM cap, or what its concurrency can
carry at that latency (the naive client's concurrency is 1).

Achieved RPM, from the server's request log (`t` is when a request arrived at the server):
  steady    admitted (non-429) requests per minute over whole windows, arrival to arrival: with t0 the
            first request and k = floor((last admitted - t0) / window), t_cut is the first admitted
            arrival at or after t0 + k·window, and rpm = admitted arrivals in [t0, t_cut) / (t_cut - t0).
            This leaves out the final partial window, which a burst-then-wait pattern would over- or
            under-count (N requests in bursts of one window's quota span only ~N/quota - 1 windows), and
            counts each request with the interval up to the next, so an evenly spaced sender is measured
            exactly too. Used for the ratios and the RESULT line (k = 0: t_cut = the last admitted arrival).
  span      admitted / (last admitted arrival + latency - t0): first request to last answer.
ratio = achieved / limit; share429 = 429 answers / all requests the server received.
Targets (from the issue): doctune ratio >= 0.9 and share429 <= 0.02; reported PASS/MISS, never asserted.

  sigint    a real `doctune synth` subprocess (own home, the whole sample repository, the same server settings)
            gets SIGINT once the server has received --sigint-after requests: the requests the server receives
            more than 2 s after the signal (target 0), the last one's delay, and how long the command took to exit.
            `--only-sigint` runs this scenario alone.

    .venv/bin/python bench/bench_synthesis.py [--requests 300] [--latency 0.2] [--rpm 600] [--window 6]
        [--concurrency 32] [--naive-requests 40] [--naive-seconds 30] [--timeout 300] [--sigint-after 40]
        [--only-sigint]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from backend.config import SAMPLE_REPO  # noqa: E402
from backend.endpoint_config import EndpointConfig  # noqa: E402
from backend.synth_config import SynthConfig  # noqa: E402
from backend.synthesize import plan_units  # noqa: E402
from tests.fake_llm import FakeLLMServer  # noqa: E402

PROJECT = "bench"
MODEL = "fake-model"
TARGET_RATIO = 0.9
TARGET_SHARE429 = 0.02
NAIVE_MAX_TRIES = 6  # per request: the first try plus up to 5 after a 429
NAIVE_MAX_SLEEP_S = 10.0


def synth_config(args, base_url: str, max_chunks: int | None) -> SynthConfig:
    endpoint = EndpointConfig(base_url=base_url, model=MODEL, rpm=args.rpm, rate_window_s=args.window,
                              concurrency=args.concurrency, request_timeout_s=30.0,
                              prices={MODEL: {"input": 0, "output": 0}})
    return SynthConfig(generator="openai", endpoint=endpoint, max_chunks=max_chunks)


def pick_units(chunks: list[dict], args):
    """The first N units in DocTune's order, and the max_chunks that makes a run plan (at least) them."""
    units = plan_units(chunks, synth_config(args, "http://127.0.0.1:1/v1", None), PROJECT)
    first = units[: args.requests]
    max_chunks = len({u.chunk_id for u in first})
    return first, max_chunks, len(units)


def measure(log: list[dict], latency: float, window: float) -> dict:
    """Achieved rates from the server's request log (see the module docstring)."""
    total = len(log)
    n429 = sum(e["status"] == 429 for e in log)
    admitted = sorted(e["t"] for e in log if e["status"] != 429)
    t0 = min((e["t"] for e in log), default=0.0)
    out = {"requests": total, "http_429": n429, "admitted": len(admitted),
           "at_429": sorted(round(e["t"] - t0, 3) for e in log if e["status"] == 429),
           "share429": n429 / total if total else 0.0, "rpm": 0.0, "rpm_span": 0.0, "windows": 0,
           "per_window": [], "span_s": 0.0}
    if not admitted:
        return out
    span = admitted[-1] + latency - t0
    out["span_s"] = span
    out["rpm_span"] = len(admitted) / span * 60 if span > 0 else 0.0
    k = int((admitted[-1] - t0) // window)
    out["windows"] = k
    out["per_window"] = [sum(t0 + i * window <= t < t0 + (i + 1) * window for t in admitted) for i in range(k + 1)]
    t_cut = next(t for t in admitted if t >= t0 + k * window) if k >= 1 else admitted[-1]
    n = sum(t < t_cut for t in admitted)
    out["rpm"] = n / (t_cut - t0) * 60 if t_cut > t0 else out["rpm_span"]
    return out


def run_doctune(client, args, max_chunks: int) -> dict:
    """One DocTune synthesis run against a fresh rate-limited server; bounded by --timeout."""
    seen = {"min_limit": None, "max_pause_s": 0.0, "polls": 0}

    def on_progress(p: dict) -> None:
        lim = p.get("limiter")
        if lim:
            seen["polls"] += 1
            seen["min_limit"] = lim["limit"] if seen["min_limit"] is None else min(seen["min_limit"], lim["limit"])
            seen["max_pause_s"] = max(seen["max_pause_s"], lim["paused_for_s"])

    with FakeLLMServer(latency_s=args.latency, rpm=args.rpm, window_s=args.window) as server:
        cfg = synth_config(args, server.base_url, max_chunks)
        server.reset_stats()
        box: dict = {}

        def target() -> None:
            try:
                box["summary"] = client.synth(PROJECT, cfg, new_run=True, on_progress=on_progress)
            except BaseException as exc:  # reported by the caller
                box["error"] = exc

        t = time.perf_counter()
        worker = threading.Thread(target=target, daemon=True, name="bench-synth")
        worker.start()
        worker.join(args.timeout)
        wall = time.perf_counter() - t
        if worker.is_alive():
            raise TimeoutError(f"DocTune synthesis did not finish within --timeout {args.timeout} s")
        if "error" in box:
            raise box["error"]
        log, stats = server.request_log, server.stats()
    summary = box["summary"]
    return measure(log, args.latency, args.window) | {"wall_s": wall, "summary": summary, "stats": stats,
                                                      "limiter": seen}


def run_naive(units, args) -> dict:
    """One request at a time with the plain sync client, 429s waited out; bounded in requests, tries and time."""
    import openai

    cfg = synth_config(args, "", None)
    with FakeLLMServer(latency_s=args.latency, rpm=args.rpm, window_s=args.window) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="no-key", max_retries=0, timeout=30.0)
        server.reset_stats()
        done = failed = 0
        t = time.perf_counter()
        deadline = t + args.naive_seconds
        try:
            for u in units[: args.naive_requests]:
                if time.perf_counter() >= deadline:
                    break
                for _ in range(NAIVE_MAX_TRIES):
                    try:
                        client.chat.completions.create(model=MODEL, messages=u.messages, temperature=cfg.temperature,
                                                       max_tokens=cfg.max_output_tokens,
                                                       response_format={"type": "json_object"})
                        done += 1
                        break
                    except openai.RateLimitError as exc:
                        try:
                            wait = float(exc.response.headers.get("retry-after", 1.0))
                        except (TypeError, ValueError):
                            wait = 1.0
                        time.sleep(min(NAIVE_MAX_SLEEP_S, max(0.0, wait)))
                else:
                    failed += 1
        finally:
            client.close()
        wall = time.perf_counter() - t
        log, stats = server.request_log, server.stats()
    return measure(log, args.latency, args.window) | {"wall_s": wall, "done": done, "failed": failed, "stats": stats}


def run_sigint(args) -> dict:
    """SIGINT to a real `doctune synth` mid-run; what the server received after it. Bounded by --timeout."""
    doctune = [sys.executable, "-m", "actors.cli"]
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="doctune-bench-sigint-") as home, \
            FakeLLMServer(latency_s=args.latency, rpm=args.rpm, window_s=args.window) as server:
        subprocess.run(doctune + ["--home", home, "ingest", str(SAMPLE_REPO), "--project", PROJECT], env=env,
                       cwd=root, check=True, capture_output=True, timeout=args.timeout)
        server.reset_stats()
        proc = subprocess.Popen(doctune + ["--home", home, "synth", "--project", PROJECT, "--base-url", server.base_url,
                                           "--model", MODEL, "--rpm", str(args.rpm), "--concurrency",
                                           str(args.concurrency)], env=env, cwd=root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + args.timeout
            while server.stats()["requests"] < args.sigint_after:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"doctune synth sent {server.stats()['requests']} requests, then "
                                       f"{'ended' if proc.poll() is not None else 'timed out'}")
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            signalled = time.monotonic()
            rc = proc.wait(timeout=args.timeout)
            exit_s = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(max(0.0, signalled + 5 - time.monotonic()))  # long enough to see a late request arrive
        log = server.request_log
    after = [e["t"] - signalled for e in log if e["t"] > signalled]
    return {"rc": rc, "exit_s": exit_s, "before": len(log) - len(after), "after": len(after),
            "late": sum(t > 2 for t in after), "last_after_s": max(after, default=0.0)}


def print_sigint(r: dict) -> None:
    print(f"sigint: {r['before']} requests before the signal, {r['after']} after it, {r['late']} more than 2 s "
          f"after (last {r['last_after_s']:.2f} s after); doctune synth exited {r['rc']} {r['exit_s']:.1f} s after "
          f"the signal")
    print(f"target sigint_late_requests == 0: {'PASS' if r['late'] == 0 else 'MISS'} ({r['late']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="DocTune requests (units) to send, about")
    ap.add_argument("--latency", type=float, default=0.2, help="the server's seconds per answer")
    ap.add_argument("--rpm", type=int, default=600, help="the server's (and DocTune's) requests per minute")
    ap.add_argument("--window", type=float, default=6.0, help="rate window in seconds (60 = per-minute)")
    ap.add_argument("--concurrency", type=int, default=32, help="DocTune's requests in flight at most")
    ap.add_argument("--naive-requests", type=int, default=40, help="cap on the naive client's requests")
    ap.add_argument("--naive-seconds", type=float, default=30.0, help="cap on the naive client's time")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on the DocTune run after this")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    ap.add_argument("--sigint-after", type=int, default=40, help="requests the server receives before the SIGINT")
    ap.add_argument("--only-sigint", action="store_true", help="run only the SIGINT scenario")
    args = ap.parse_args()
    if args.only_sigint:
        sig = run_sigint(args)
        print_sigint(sig)
        print(f"RESULT sigint_late_requests={sig['late']} sigint_after_requests={sig['after']} "
              f"sigint_exit_s={sig['exit_s']:.2f}")
        return
    if min(args.requests, args.rpm, args.concurrency, args.naive_requests) < 1 or args.window <= 0 \
            or args.latency < 0 or args.timeout <= 0:
        ap.error("--requests, --rpm, --concurrency, --naive-requests need >= 1; --window, --timeout > 0; "
                 "--latency >= 0")

    per_request = max(args.latency, 1e-9)
    limit = min(args.rpm, args.concurrency * 60 / per_request)
    naive_limit = min(args.rpm, 60 / per_request)
    quota = max(1, int(args.rpm * args.window / 60 + 1e-9))
    t_start = time.perf_counter()

    import ray

    from actors.client import DocTune

    client = None
    with tempfile.TemporaryDirectory(prefix="doctune-bench-synth-") as home:
        try:
            t = time.perf_counter()
            client = DocTune(home, num_cpus=args.num_cpus)
            ray_s = time.perf_counter() - t
            t = time.perf_counter()
            client.ingest(SAMPLE_REPO, PROJECT)
            ingest_s = time.perf_counter() - t
            chunks = client.store.chunks(PROJECT).to_pylist()
            units, max_chunks, all_units = pick_units(chunks, args)
            print(f"sample repo: {len(chunks)} chunks, {all_units} units in all; using the first {len(units)} "
                  f"(max_chunks={max_chunks}); Ray start {ray_s:.1f} s, ingest {ingest_s:.1f} s")
            if len(units) < args.requests:
                print(f"warning: only {len(units)} units available, fewer than --requests {args.requests}")
            print(f"server: latency {args.latency} s, {args.rpm} rpm as {quota} requests per {args.window:g} s "
                  f"sliding window; limit min(rpm, concurrency*60/latency): doctune {limit:.0f}, naive "
                  f"{naive_limit:.0f} rpm")

            doc = run_doctune(client, args, max_chunks)
            s = doc["summary"]
            print(f"doctune: status {s['status']}, {s['done']} done, {s['failed']} failed, "
                  f"{s['requests']} attempts logged ({s['http_429']} 429); server saw {doc['requests']} requests, "
                  f"{doc['http_429']} 429; synth() wall {doc['wall_s']:.1f} s, request span {doc['span_s']:.1f} s; "
                  f"adaptive limit min {doc['limiter']['min_limit']}, longest pause seen "
                  f"{doc['limiter']['max_pause_s']:.2f} s")
            print(f"doctune admitted per {args.window:g} s window (quota {quota}): {doc['per_window']}")
            if doc["at_429"]:
                print(f"doctune 429s arrived at (s after the first request): {doc['at_429'][:24]}"
                      f"{' ...' if len(doc['at_429']) > 24 else ''}")
            if s["status"] != "completed":
                print(f"warning: DocTune run ended '{s['status']}': {s.get('error')}")

            naive = run_naive(units, args)
            print(f"naive:   {naive['done']} done, {naive['failed']} failed, server saw {naive['requests']} requests, "
                  f"{naive['http_429']} 429; wall {naive['wall_s']:.1f} s")
        finally:
            if client is not None:
                try:
                    client.store.shutdown()
                except Exception as exc:  # Ray may be gone already; shutting it down is what matters
                    print(f"note: store shutdown: {exc}")
            ray.shutdown()

    d_ratio = doc["rpm"] / limit if limit else 0.0
    n_ratio = naive["rpm"] / naive_limit if naive_limit else 0.0
    speedup = doc["rpm"] / naive["rpm"] if naive["rpm"] else float("inf")
    print()
    print(f"{'variant':<9} {'requests':>8} {'429s':>5} {'share429':>8} {'rpm':>7} {'rpm_span':>8} {'limit':>6} "
          f"{'ratio':>6}")
    for name, r, lim in (("doctune", doc, limit), ("naive", naive, naive_limit)):
        print(f"{name:<9} {r['requests']:>8} {r['http_429']:>5} {r['share429']:>8.3f} {r['rpm']:>7.1f} "
              f"{r['rpm_span']:>8.1f} {lim:>6.0f} {r['rpm'] / lim:>6.3f}")
    print(f"naive achieves {naive['rpm'] / doc['rpm']:.3f} of DocTune's rpm (DocTune {speedup:.2f}x)")
    print(f"target doctune_ratio >= {TARGET_RATIO}: {'PASS' if d_ratio >= TARGET_RATIO else 'MISS'} ({d_ratio:.3f})")
    print(f"target share429 <= {TARGET_SHARE429}: {'PASS' if doc['share429'] <= TARGET_SHARE429 else 'MISS'} "
          f"({doc['share429']:.3f})")
    sig = run_sigint(args)
    print_sigint(sig)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    line = {
        "rpm_limit": round(limit), "doctune_rpm": round(doc["rpm"], 1), "doctune_ratio": round(d_ratio, 3),
        "doctune_share429": round(doc["share429"], 4), "doctune_rpm_span": round(doc["rpm_span"], 1),
        "naive_rpm": round(naive["rpm"], 1), "naive_limit": round(naive_limit), "naive_ratio": round(n_ratio, 3),
        "naive_frac_of_doctune": round(naive["rpm"] / doc["rpm"], 3) if doc["rpm"] else 0,
        "speedup_vs_naive": round(speedup, 2), "requests": doc["requests"], "latency_s": args.latency,
        "window_s": args.window, "concurrency": args.concurrency, "sigint_late_requests": sig["late"],
    }
    print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
