"""Dashboard render time at 1,000,000 samples against a small store, page by page, in a real browser.

Two homes are seeded with `tests/seed_store.py` (rows generated inside DuckDB, before any other process opens
them): SMALL (--small-samples 400 samples, --small-metric-points 600 metric points) and LARGE (--samples
1,000,000, --metric-points 100,000; `seed_store` spreads them over 2 training runs x 6 curves, plus ~10
eval-loss points a run, so 100,000 gives 100,016 metric rows). Seeding time, row counts (read from the DuckDB
file directly, before the dashboard opens it) and file size are printed.

Both dashboards then run side by side, each as `doctune --home H dashboard --host 127.0.0.1 --port P` (its own
persistent Ray cluster, its own Streamlit process) on a free loopback port, and Chromium (headless, through
Playwright) visits every page of both, alternating small and large visit by visit so both see the same
machine load (this machine may be shared). Before measuring, each server gets one unmeasured warm-up visit
of the overview: the first visit of a server process connects it to Ray and creates its client.

A visit opens a new browser tab (a new Streamlit session, so st.session_state starts empty; the browser's
HTTP cache is shared per server, as for a returning user) and times from `page.goto` until the page has
finished: the Streamlit app is connected and its script state is `notRunning`, the page's h1 title is there,
there is no status widget and no `stSkeleton` placeholder, and the page's main content is there: at least the
Plotly charts (`.js-plotly-plot`, each drawn, i.e. holding its `.main-svg`), dataframes (`stDataFrame`) and
metrics (`stMetric`) the seeded store gives that page (PAGES below). A visit that shows an error
(`stException`, an error alert) or does not finish within --visit-timeout is reported as such, not timed.

Per page and home: `first` is the page's first visit on that server, then --repeats more visits (default 3),
whose median is `median`. Caches: Streamlit's st.cache_data lives in the server process. The only one the pages
use is `_profile` in dashboard/views/dataset.py (the dataset profile, ttl 30 s), so the dataset page's first
visit computes the profile (cache miss) and a repeat within 30 s of that reuses it (hit); each dataset
visit's status (miss / hit / unknown, from the visits' start and end times) is printed and stored. The
overview is visited at `/` (the default page; `/overview` shows the same page through its hidden twin).

Target (issue 6): each page's large median at most 2.0x its small median; reported PASS/MISS, never asserted.
The first-visit ratio is printed too. Every dashboard process group is terminated and every home's Ray
cluster stopped (`doctune --home H cluster stop`) at the end, on error and on Ctrl-C too.

    .venv/bin/python bench/bench_dashboard.py [--samples 1000000] [--metric-points 100000]
        [--small-samples 400] [--small-metric-points 600] [--files 40] [--repeats 3]
        [--visit-timeout 60] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import DB_FILENAME  # noqa: E402
from tests.seed_store import seed_store  # noqa: E402

TARGET = 2.0
CACHE_TTL_S = 30.0  # dashboard/views/dataset.py: @st.cache_data(ttl=30) on _profile
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# page -> (URL path, h1 title, Plotly charts, dataframes, st.metric) that the seeded store gives it, at least
PAGES = {
    "overview": ("", "Overview", 0, 2, 3),
    "dataset": ("dataset", "Corpus & dataset", 6, 1, 10),
    "synthesis": ("synthesis", "Synthesis", 0, 1, 7),
    "training": ("training", "Training", 2, 0, 5),
    "compare": ("compare", "Compare runs", 1, 2, 0),
    "evaluation": ("evaluation", "Evaluation", 1, 1, 0),
}
COUNTED = ("dataset_samples", "metrics", "files", "chunks", "runs", "api_requests", "eval_results")

# true once the page has finished (or shows an error); `state` says which, and what was on the page
STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const q = (s) => document.querySelectorAll(s);
  const plots = Array.from(q('.js-plotly-plot'));
  return {
    connection: app && app.getAttribute('data-test-connection-state'),
    script: app && app.getAttribute('data-test-script-state'),
    h1: Array.from(q('h1')).map((e) => e.innerText.trim()),
    status_widget: q('[data-testid="stStatusWidget"]').length,
    skeletons: q('[data-testid="stSkeleton"]').length,
    plots: plots.length, plots_drawn: plots.filter((p) => p.querySelector('.main-svg')).length,
    frames: q('[data-testid="stDataFrame"]').length, metrics: q('[data-testid="stMetric"]').length,
    errors: Array.from(q('[data-testid="stException"], [data-testid="stAlertContentError"]'))
              .map((e) => e.innerText.slice(0, 300)),
  };
}"""
READY_JS = """([title, plots, frames, metrics]) => {
  const s = (%s)();
  if (s.connection !== 'CONNECTED' || s.script !== 'notRunning' || !s.h1.includes(title)) return false;
  if (s.errors.length) return true;
  return s.status_widget === 0 && s.skeletons === 0 && s.plots >= plots && s.plots_drawn === s.plots
         && s.frames >= frames && s.metrics >= metrics;
}""" % STATE_JS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(home: Path, samples: int, metric_points: int, files: int) -> dict:
    """Seed `home` (which must not exist yet) and count its rows straight from the DuckDB file."""
    import duckdb

    t = time.perf_counter()
    seed_store(home, samples=samples, metric_points=metric_points, files=files)
    seconds = time.perf_counter() - t
    db = home / DB_FILENAME
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
    finally:
        con.close()
    return {"samples": samples, "metric_points": metric_points, "files": files, "seed_s": round(seconds, 2),
            "rows": rows, "db_mb": round(db.stat().st_size / 1e6, 1)}


class Dashboard:
    """`doctune --home H dashboard` in its own process group; `stop` ends it and the home's Ray cluster."""

    def __init__(self, name: str, home: Path):
        self.name, self.home, self.port, self.url, self.proc = name, home, None, None, None
        self.log = home / "logs" / "bench-dashboard.log"

    def start(self, timeout_s: float) -> float:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        doctune = Path(sys.executable).with_name("doctune")
        cmd = ([str(doctune)] if doctune.exists() else [sys.executable, "-m", "actors.cli"]) + [
            "--home", str(self.home), "dashboard", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if k not in {
            "RAY_ADDRESS", "DOCTUNE_HOME", "DOCTUNE_DASHBOARD_PASSWORD", "DOCTUNE_DASHBOARD_AUTH"}}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} dashboard exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with opener.open(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return time.perf_counter() - t
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} dashboard not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.port is None:
            return  # never started: no process, no cluster
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        doctune = Path(sys.executable).with_name("doctune")
        cmd = ([str(doctune)] if doctune.exists() else [sys.executable, "-m", "actors.cli"]) + [
            "--home", str(self.home), "cluster", "stop"]
        try:
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90,
                           check=False)
        except subprocess.TimeoutExpired:
            print(f"warning: `{' '.join(cmd)}` timed out", file=sys.stderr)


def visit(context, dash: Dashboard, page: str, timeout_s: float) -> dict:
    """One visit in a new tab (a new Streamlit session): seconds from goto until the page has finished."""
    path, title, plots, frames, metrics = PAGES[page]
    tab = context.new_page()
    try:
        start = time.time()
        t = time.perf_counter()
        out = {"page": page, "home": dash.name, "start": start}
        try:
            tab.goto(f"{dash.url}/{path}", timeout=timeout_s * 1000)
            left = max(1.0, timeout_s - (time.perf_counter() - t))
            tab.wait_for_function(READY_JS, arg=[title, plots, frames, metrics], polling=25, timeout=left * 1000)
            out["seconds"] = time.perf_counter() - t
        except Exception as exc:  # a timeout: recorded with what the page showed, not timed
            out["seconds"] = None
            out["failure"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        out["end"] = time.time()
        try:
            state = tab.evaluate(STATE_JS)
        except Exception as exc:
            state = {"errors": [], "unreadable": str(exc)[:200]}
        if state.get("errors"):
            out["seconds"], out["failure"] = None, "page error: " + " | ".join(state["errors"])[:500]
        if "failure" in out:
            out["state"] = state
        return out
    finally:
        tab.close()


def profile_cache(v: dict, fills: dict) -> str:
    """Whether this dataset visit found `_profile` in the server's st.cache_data (ttl 30 s): `miss` on a server's
    first visit or 30 s after the last fill, `hit` when the whole visit falls within 30 s of it."""
    fill = fills.get(v["home"])
    if fill is None or v["start"] - fill[1] >= CACHE_TTL_S:
        fills[v["home"]] = (v["start"], v["end"])
        return "miss"
    return "hit" if v["end"] - fill[0] < CACHE_TTL_S else "unknown"


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--metric-points", type=int, default=100_000)
    ap.add_argument("--small-samples", type=int, default=400)
    ap.add_argument("--small-metric-points", type=int, default=600)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3, help="visits per page and home after the first")
    ap.add_argument("--visit-timeout", type=float, default=60.0)
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=None, help="keep the homes and logs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    def on_term(*_):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    work = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    homes = {"small": work / "small", "large": work / "large"}
    taken = [str(h) for h in homes.values() if h.exists()]
    if taken:
        print(f"{', '.join(taken)} exist already: seeding appends to a store, so give an empty --out", file=sys.stderr)
        return 2
    result = {"target_ratio": TARGET, "repeats": args.repeats, "cpus": os.cpu_count(),
              "loadavg_start": os.getloadavg(), "homes": {}, "visits": [], "pages": {}}
    print(f"work dir {work}; {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    sizes = {"small": (args.small_samples, args.small_metric_points), "large": (args.samples, args.metric_points)}
    dashboards = {name: Dashboard(name, home) for name, home in homes.items()}
    try:
        for name, (samples, points) in sizes.items():
            s = seed(homes[name], samples, points, args.files)
            result["homes"][name] = s
            print(f"seeded {name:<5} in {s['seed_s']:6.2f} s: {s['db_mb']} MB, "
                  + ", ".join(f"{k} {v:,}" for k, v in s["rows"].items()))
            if s["rows"]["metrics"] < points:
                print(f"warning: {name} has {s['rows']['metrics']:,} metric rows, fewer than the {points:,} asked for")
        for d in dashboards.values():
            up = d.start(args.start_timeout)
            result["homes"][d.name]["startup_s"] = round(up, 2)
            print(f"{d.name} dashboard healthy at {d.url} after {up:.1f} s (Ray cluster + Streamlit)")
        measure(args, dashboards, result)
    finally:
        for d in dashboards.values():
            d.stop()
        result["loadavg_end"] = os.getloadavg()
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"results written to {args.json}")
    return 0


def measure(args, dashboards: dict[str, Dashboard], result: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = {name: browser.new_context(viewport={"width": 1400, "height": 1000}) for name in dashboards}
        try:
            for name, d in dashboards.items():
                v = visit(contexts[name], d, "overview", max(args.visit_timeout, 120))
                result["homes"][name]["warmup_s"] = v["seconds"] and round(v["seconds"], 2)
                print(f"warm-up {name}: overview {fmt(v['seconds'])} s (connects the server to Ray)"
                      + (f"  FAILED {v['failure']}" if "failure" in v else ""))
            fills: dict = {}
            for page in PAGES:
                failed = set()
                for r in range(args.repeats + 1):
                    order = ["small", "large"] if r % 2 == 0 else ["large", "small"]
                    for name in order:
                        if name in failed:
                            continue
                        v = visit(contexts[name], dashboards[name], page, args.visit_timeout)
                        v["visit"] = r  # 0: the page's first visit on this server
                        if page == "dataset":
                            v["profile_cache"] = profile_cache(v, fills)
                        if "failure" in v:
                            failed.add(name)  # the same page would fail again: skip its repeats
                        result["visits"].append(v)
                line = [f"{page:<10}"]
                for name in dashboards:
                    vs = [v for v in result["visits"] if v["page"] == page and v["home"] == name]
                    line.append(f"{name} " + " ".join(
                        (fmt(v["seconds"]) if v["seconds"] is not None else "FAIL")
                        + (f"({v['profile_cache']})" if "profile_cache" in v else "") for v in vs))
                print("  ".join(line))
                for v in result["visits"]:
                    if v["page"] == page and "failure" in v:
                        print(f"    {v['home']} visit {v['visit']}: {v['failure']}; page state {v.get('state')}")
        finally:
            for c in contexts.values():
                c.close()
            browser.close()


def report(result: dict) -> None:
    print()
    print(f"{'page':<11}{'small 1st':>10}{'small med':>10}{'large 1st':>10}{'large med':>10}"
          f"{'ratio med':>10}{'ratio 1st':>10}{'target':>8}  verdict")
    all_pass = True
    for page in PAGES:
        row = {}
        for name in ("small", "large"):
            vs = [v for v in result["visits"] if v["page"] == page and v["home"] == name]
            first = next((v["seconds"] for v in vs if v["visit"] == 0), None)
            rep = [v["seconds"] for v in vs if v["visit"] > 0]
            ok = bool(vs) and all(x is not None for x in [first] + rep)
            row[name] = {"first_s": first, "median_s": statistics.median(rep) if ok and rep else None,
                         "repeats_s": rep, "ok": ok}
            if page == "dataset":
                row[name]["profile_cache"] = [v.get("profile_cache") for v in vs]
        s, lg = row["small"], row["large"]
        ratio = lg["median_s"] / s["median_s"] if s["median_s"] and lg["median_s"] else None
        ratio_first = lg["first_s"] / s["first_s"] if s["first_s"] and lg["first_s"] else None
        verdict = "ERROR" if ratio is None else ("PASS" if ratio <= TARGET else "MISS")
        all_pass &= verdict == "PASS"
        result["pages"][page] = {"small": s, "large": lg, "ratio_median": ratio, "ratio_first": ratio_first,
                                 "verdict": verdict}
        print(f"{page:<11}{fmt(s['first_s']):>10}{fmt(s['median_s']):>10}{fmt(lg['first_s']):>10}"
              f"{fmt(lg['median_s']):>10}{fmt(ratio):>10}{fmt(ratio_first):>10}{'<= ' + str(TARGET):>8}  {verdict}")
    for name in ("small", "large"):
        caches = result["pages"]["dataset"][name].get("profile_cache") or []
        print(f"dataset page, {name}: _profile cache per visit (first, then repeats): {', '.join(map(str, caches))}")
    print("seconds from page.goto until the page has finished (script idle, no skeleton, charts drawn); "
          "1st = first visit of the page on that server, med = median of the repeats")
    print(f"load average at start {' '.join(f'{x:.2f}' for x in result['loadavg_start'])}, "
          f"at end {' '.join(f'{x:.2f}' for x in result['loadavg_end'])} on {result['cpus']} CPUs")
    result["all_pass"] = all_pass
    print(f"RESULT all_pass={all_pass} " + " ".join(
        f"{p}={fmt(r['ratio_median'])}" for p, r in result["pages"].items()))


if __name__ == "__main__":
    sys.exit(main())
