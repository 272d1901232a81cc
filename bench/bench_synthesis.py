"""Synthesis against a misbehaving API, scenarios side by side in one invocation (issue 15's targets).

The endpoint is the fake OpenAI-compatible server of `tests/fake_llm.py` on 127.0.0.1 (100 ms per answer,
streamed), one fresh instance per scenario; the prompts are DocTune's own, the first N units that
`backend.synthesize.plan_units` renders from the bundled sample repository, ingested into a temp home. Each
scenario is one `DocTune.synth` run (openai generator, `--concurrency` in flight, `--rpm` configured) with a model
name of its own, so no scenario reuses another's cached answers. Windows scale with `--scale`: 1 means the
providers' per-minute windows, 0.1 (the default) 6 s windows at the same rate, for a run of a few minutes.

  free     the server enforces the configured rpm and nothing else
  faults   the issue's mix: 20 % HTTP 500, 10 % 429 with Retry-After 1, 2 % hangs of 120 s, 10 % truncated JSON,
           20 % <think> blocks (and the configured rpm enforced)
  limit    the server's real limit is half the configured rpm

Figures: rpm (admitted requests per minute over whole windows, from the server's log, see `measure`), share429
(429 answers / requests the server received), goodput (units done per minute, from the run's progress polled
every 0.5 s), the longest gap with no unit finished while units remained, and for `limit` the 429 share and the
goodput after the first window. Targets (reported PASS/MISS, never asserted): free ratio >= 0.95 with <= 1 %
429s; faults goodput >= 0.5 x free's and longest gap < 10 s; limit after the first window <= 5 % 429s and
goodput >= 0.9 x the server's limit.

`--naive` adds the earlier comparison: DocTune against the plain sync `openai.OpenAI` client, one request at a time
over the same prompts, sleeping Retry-After on a 429 (bounded), at `--latency`; achieved rpm over whole windows:
with t0 the first request and k = floor((last admitted - t0) / window), rpm = admitted arrivals in [t0, t_cut) /
(t_cut - t0), t_cut the first admitted arrival at or after t0 + k·window.

    .venv/bin/python bench/bench_synthesis.py [--scale 0.1] [--scenarios free,faults,limit] [--concurrency 16]
        [--rpm 600] [--naive]
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
from tests.fake_llm import Faults, FakeLLMServer  # noqa: E402

PROJECT = "bench"
MODEL = "fake-model"
TARGET_RATIO = 0.9
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


SCENARIO_TARGETS = {
    "free": "ratio >= 0.95 of the configured limit, 429 share <= 0.01",
    "faults": "goodput >= 0.5 x free's, longest gap with no unit finished < 10 s",
    "limit": "after the first window: 429 share <= 0.05, goodput >= 0.9 x the server's limit",
    "sigint": "requests the server receives more than 2 s after SIGINT == 0",
}


def scenario_server(name: str, args) -> dict:
    """The fake server of a scenario: the issue's fault mix, a limit below the configured rpm, or neither."""
    if name == "faults":
        return {"latency_s": 0.1, "rpm": args.rpm, "window_s": args.window,
                "faults": Faults(p_500=0.2, p_429=0.1, retry_after_s=1.0, p_timeout=0.02, hang_s=120.0,
                                 p_malformed=0.1, p_think=0.2)}
    if name == "limit":
        return {"latency_s": 0.1, "rpm": args.rpm // 2, "window_s": args.window}
    return {"latency_s": 0.1, "rpm": args.rpm, "window_s": args.window}


def run_scenario(client, name: str, args, chunks: list[dict]) -> dict:
    """One DocTune run of `args.units` units against the scenario's fresh server; a model name of its own, so no
    scenario reuses another's cached answers. Progress is polled every 0.5 s for the completion timeline."""
    model = f"{MODEL}-{name}"
    base = synth_config(args, "http://127.0.0.1:1/v1", None)
    units = plan_units(chunks, base, PROJECT)[: args.units]
    max_chunks = len({u.chunk_id for u in units})
    timeline: list[tuple[float, int, int]] = []  # (seconds, units done, units ended)
    caps, found = [], [0]  # the limiter's in-flight cap at each poll; server limits found
    with FakeLLMServer(**scenario_server(name, args)) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model=model, rpm=args.rpm, rate_window_s=args.window,
                                  concurrency=args.concurrency, prices={model: {"input": 0, "output": 0}},
                                  stream=not args.no_stream)
        cfg = SynthConfig(generator="openai", endpoint=endpoint, max_chunks=max_chunks)
        server.reset_stats()
        t0 = time.monotonic()
        box: dict = {}

        def on_progress(p: dict) -> None:
            timeline.append((time.monotonic() - t0, p["done"], p["done"] + p["failed"]))
            if p.get("limiter"):
                caps.append(p["limiter"]["limit"])
                found[0] = p["limiter"]["limit_found"]

        def target() -> None:
            try:
                box["summary"] = client.synth(PROJECT, cfg, new_run=True, on_progress=on_progress)
            except BaseException as exc:  # reported by the caller
                box["error"] = exc

        worker = threading.Thread(target=target, daemon=True, name=f"bench-{name}")
        worker.start()
        worker.join(args.timeout)
        if worker.is_alive():
            raise TimeoutError(f"scenario {name} did not finish within --timeout {args.timeout} s")
        if "error" in box:
            raise box["error"]
        log, server_rpm = server.request_log, server.rpm
    s = box["summary"]
    planned = s["done"] + s["failed"]
    end = next((t for t, _, ended in timeline if ended >= planned), timeline[-1][0] if timeline else 0.0)
    # from the first request (the server's clock is this process's): Ray's start and the planning left out
    first = min((e["t"] for e in log), default=t0) - t0
    # the longest stretch with no unit finished while some remained (poll resolution: 0.5 s)
    gap, last_t, last_n = 0.0, first, 0
    for t, _, ended in timeline:
        if ended > last_n:
            gap, last_t, last_n = max(gap, t - last_t), t, ended
    after = [e for e in log if e["t"] - t0 >= first + args.window]
    done_after = [d for t, d, _ in timeline if t >= first + args.window]
    span_after = max(1e-9, end - first - args.window)
    return measure(log, 0.1, args.window) | {
        "name": name, "summary": s, "units": len(units), "server_rpm": server_rpm, "wall_s": end - first,
        "cap_min": min(caps, default=None), "cap_mean": sum(caps) / len(caps) if caps else None,
        "limit_found": found[0],
        "goodput": s["done"] / (end - first) * 60 if end > first else 0.0, "longest_gap_s": gap,
        "share429_after": sum(e["status"] == 429 for e in after) / len(after) if after else 0.0,
        "goodput_after": (done_after[-1] - done_after[0]) / span_after * 60 if len(done_after) > 1 else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1,
                    help="1: per-minute windows and about 5 minutes per scenario; 0.1: 6 s windows, about 30 s")
    ap.add_argument("--scenarios", default="free,faults,limit", help="comma-separated: free, faults, limit, sigint")
    ap.add_argument("--concurrency", type=int, default=16, help="DocTune's requests in flight at most")
    ap.add_argument("--rpm", type=int, default=600, help="DocTune's configured requests per minute")
    ap.add_argument("--timeout", type=float, default=1200.0, help="give up on a scenario after this")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    ap.add_argument("--no-stream", action="store_true", help="ask for whole answers (hangs end at the timeout)")
    ap.add_argument("--naive", action="store_true", help="also DocTune against a naive sequential client")
    ap.add_argument("--requests", type=int, default=300, help="--naive: DocTune requests (units), about")
    ap.add_argument("--latency", type=float, default=0.2, help="--naive and sigint: the server's seconds per answer")
    ap.add_argument("--naive-requests", type=int, default=40, help="cap on the naive client's requests")
    ap.add_argument("--naive-seconds", type=float, default=30.0, help="cap on the naive client's time")
    ap.add_argument("--sigint-after", type=int, default=40, help="sigint: requests the server receives before it")
    args = ap.parse_args()
    if args.scale <= 0 or min(args.rpm, args.concurrency) < 1:
        ap.error("--scale > 0; --rpm, --concurrency >= 1")
    args.window = 60.0 * args.scale
    # five windows' worth of units at the configured rate: the fault mix needs about twice as long
    args.units = max(20, int(args.rpm * 5 * args.scale))
    names = [n for n in args.scenarios.split(",") if n]
    if unknown := set(names) - set(SCENARIO_TARGETS):
        ap.error(f"unknown scenario(s) {sorted(unknown)}: choose from {sorted(SCENARIO_TARGETS)}")

    import ray

    from actors.client import DocTune

    client, results = None, {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="doctune-bench-synth-") as home:
        try:
            client = DocTune(home, num_cpus=args.num_cpus)
            client.ingest(SAMPLE_REPO, PROJECT)
            chunks = client.store.chunks(PROJECT).to_pylist()
            print(f"scale {args.scale}: {args.window:g} s windows, {args.units} units per scenario, "
                  f"rpm {args.rpm}, concurrency {args.concurrency}")
            for name in [n for n in names if n != "sigint"]:
                r = results[name] = run_scenario(client, name, args, chunks)
                s = r["summary"]
                print(f"{name}: {s['status']}, {s['done']} done, {s['failed']} dead ({s['dead_reasons']}), "
                      f"server saw {r['requests']} requests, {r['http_429']} 429, {r['wall_s']:.1f} s; in-flight cap "
                      f"min {r['cap_min']}, mean {r['cap_mean'] or 0:.1f}; server limits found {r['limit_found']}",
                      flush=True)
            if args.naive:
                compare_naive(client, args, chunks)
            if "sigint" in names:
                results["sigint"] = run_sigint(args)
                print_sigint(results["sigint"])
        finally:
            if client is not None:
                try:
                    client.store.shutdown()
                except Exception as exc:  # Ray may be gone already; shutting it down is what matters
                    print(f"note: store shutdown: {exc}")
            ray.shutdown()

    print()
    print(f"{'scenario':<8} {'units':>5} {'done':>5} {'dead':>4} {'requests':>8} {'share429':>8} {'429 after':>9} "
          f"{'rpm':>6} {'goodput':>7} {'after':>6} {'gap_s':>6} {'wall_s':>6}")
    for name, r in results.items():
        if name == "sigint":
            continue
        s = r["summary"]
        print(f"{name:<8} {r['units']:>5} {s['done']:>5} {s['failed']:>4} {r['requests']:>8} {r['share429']:>8.3f} "
              f"{r['share429_after']:>9.3f} {r['rpm']:>6.1f} {r['goodput']:>7.1f} {r['goodput_after']:>6.1f} "
              f"{r['longest_gap_s']:>6.1f} {r['wall_s']:>6.1f}")
    line = {}
    if "free" in results:
        free = results["free"]
        line |= {"free_ratio": round(free["rpm"] / args.rpm, 3), "free_share429": round(free["share429"], 4)}
        verdict("free", line["free_ratio"] >= 0.95 and line["free_share429"] <= 0.01, line)
    if "faults" in results:
        faults = results["faults"]
        line |= {"faults_longest_gap_s": round(faults["longest_gap_s"], 1)}
        ok = line["faults_longest_gap_s"] < 10
        if "free" in results:
            line["faults_goodput_ratio"] = round(faults["goodput"] / results["free"]["goodput"], 3)
            ok = ok and line["faults_goodput_ratio"] >= 0.5
        verdict("faults", ok, line)
    if "limit" in results:
        limit = results["limit"]
        line |= {"limit_share429_after": round(limit["share429_after"], 4),
                 "limit_goodput_ratio": round(limit["goodput_after"] / limit["server_rpm"], 3)}
        verdict("limit", line["limit_share429_after"] <= 0.05 and line["limit_goodput_ratio"] >= 0.9, line)
    if "sigint" in results:
        line["sigint_late_requests"] = results["sigint"]["late"]
    print(f"total {time.perf_counter() - t_start:.1f} s")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in line.items()))


def verdict(name: str, ok: bool, line: dict) -> None:
    figures = ", ".join(f"{k}={v}" for k, v in line.items() if k.startswith(name))
    print(f"target {name} ({SCENARIO_TARGETS[name]}): {'PASS' if ok else 'MISS'} ({figures})")


def compare_naive(client, args, chunks: list[dict]) -> None:
    """DocTune against a naive one-at-a-time client on the same prompts and limit (see the module docstring)."""
    units, max_chunks, all_units = pick_units(chunks, args)
    per_request = max(args.latency, 1e-9)
    limit, naive_limit = min(args.rpm, args.concurrency * 60 / per_request), min(args.rpm, 60 / per_request)
    doc = run_doctune(client, args, max_chunks)
    naive = run_naive(units, args)
    print(f"{'variant':<9} {'requests':>8} {'429s':>5} {'share429':>8} {'rpm':>7} {'rpm_span':>8} {'limit':>6} "
          f"{'ratio':>6}")
    for name, r, lim in (("doctune", doc, limit), ("naive", naive, naive_limit)):
        print(f"{name:<9} {r['requests']:>8} {r['http_429']:>5} {r['share429']:>8.3f} {r['rpm']:>7.1f} "
              f"{r['rpm_span']:>8.1f} {lim:>6.0f} {r['rpm'] / lim:>6.3f}")
    if doc["rpm"] and naive["rpm"]:
        print(f"naive achieves {naive['rpm'] / doc['rpm']:.3f} of DocTune's rpm (DocTune "
              f"{doc['rpm'] / naive['rpm']:.2f}x); DocTune ratio {doc['rpm'] / limit:.3f} (target {TARGET_RATIO})")


if __name__ == "__main__":
    main()
