"""What a browser test's poll of a run's state costs: a fresh process per question (`python -c` that imports the
client, joins the home's cluster and asks once, as tests/dashboard_browser.py did) against one process that
joined once and is asked again (`ClientProcess`, as it does now). Both ask `runs(project)` of the same cluster,
alternating question by question so both see the same machine load; printed: median wall seconds and CPU
seconds (user + system of the asking processes) per question, and the ratios.

    .venv/bin/python bench/bench_test_polling.py [--questions 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tests.dashboard_browser import ClientProcess  # noqa: E402

FRESH = ("import json, sys; from actors.client import DocTune; dt = DocTune(sys.argv[1]); "
         "print(json.dumps(dt.runs(sys.argv[2]), default=str))")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ask_fresh(home: Path) -> tuple[float, float]:
    wall, cpu = time.monotonic(), children_cpu()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", FRESH, str(home), "bench"], capture_output=True, text=True,
                         timeout=300, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    json.loads(out.stdout.strip().splitlines()[-1])
    return time.monotonic() - wall, children_cpu() - cpu


def ask_held(client: ClientProcess) -> tuple[float, float]:
    def cpu() -> float:  # the held process is not a finished child: read its own counters
        fields = Path(f"/proc/{client.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    wall, before = time.monotonic(), cpu()
    client.ask("runs", "bench")
    return time.monotonic() - wall, cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    from actors.runtime import start_local_cluster, stop_local_cluster

    home = Path(tempfile.mkdtemp(prefix="bench-polling-"))
    (home / "logs").mkdir()
    start_local_cluster(home, num_cpus=1)
    client = None
    try:
        client = ClientProcess(home)
        client.ask("runs", "bench")  # its start and join, once (not counted: a test pays it once per home)
        fresh, held = [], []
        for _ in range(args.questions):
            fresh.append(ask_fresh(home))
            held.append(ask_held(client))
        def per_question(rows, i):  # wall: the median; cpu: the mean (a held question is below the clock's tick)
            return statistics.median(r[i] for r in rows) if i == 0 else sum(r[i] for r in rows) / len(rows)

        for name, rows in (("fresh process per question", fresh), ("one held process", held)):
            print(f"{name:>28}: wall {per_question(rows, 0):.3f} s (median), cpu {per_question(rows, 1):.3f} s (mean) "
                  f"per question, {len(rows)} questions")
        print(f"ratio fresh / held: wall {per_question(fresh, 0) / per_question(held, 0):.0f}x, "
              f"cpu {per_question(fresh, 1) / max(per_question(held, 1), 0.01 / len(held)):.0f}x")
    finally:
        if client is not None:
            client.close()
        stop_local_cluster(home)


if __name__ == "__main__":
    main()
