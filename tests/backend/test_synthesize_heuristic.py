"""The offline heuristic generator on code nobody here wrote: every unit of the Python standard library ends as
samples or as a dead letter with its reason, and the run's even coverage order (`target_samples`)."""

import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from backend.chunk import chunk_files, chunker_fingerprint
from backend.ingest import plan_ingest
from backend.ingest_config import IngestConfig
from backend.synth_config import SynthConfig
from backend.synthesize import (ParseError, build_samples, coverage_order, heuristic_response, parse_samples,
                                plan_units)


def heuristic_result(unit, cfg: SynthConfig) -> tuple[str, list[dict]]:
    """What a generator actor makes of one unit on the heuristic path: ("ok", samples) or ("no_samples", [])."""
    try:
        items = parse_samples(heuristic_response(unit, cfg.samples_per_request))
    except ParseError:
        return "no_samples", []
    return "ok", build_samples(unit, items, project="std", run_id="r", generator="heuristic", language="en")


def test_a_method_merged_after_its_class_header_is_found():
    # chunking merges a small method part after its class's header; the header may hold only a constant, which
    # ast.get_docstring refuses (the TypeError that once failed a whole run over the standard library)
    text = ("class SocketIO:\n\n    nextseq = 0\n\nclass SocketIO:\n    def __init__(self, sock):\n"
            '        """Wrap a socket."""\n        self.sock = sock\n')
    chunk = {"chunk_id": "c1", "kind": "python", "path": "idlelib/rpc.py", "start_line": 1, "end_line": 8,
             "heading_path": ["idlelib.rpc", "SocketIO.__init__"], "symbol": "SocketIO.__init__", "token_count": 40,
             "text": text}
    code_tasks = ("qa", "codegen", "explain", "completion")
    cfg = SynthConfig(tasks_per_chunk=5, probe_share=0, task_mix={t: 1.0 for t in code_tasks})
    units = plan_units([chunk], cfg, "std")
    assert {u.task for u in units} == set(code_tasks)
    answers = {u.task: heuristic_result(u, cfg)[1] for u in units}
    assert "Wrap a socket." in answers["qa"][0]["output"]
    assert "def __init__(self, sock)" in answers["explain"][0]["output"]


def test_coverage_order_interleaves_files_in_a_seeded_order():
    chunks = [{"chunk_id": f"{f}{i}", "kind": "markdown", "path": f"{f}.md", "start_line": i, "end_line": i,
               "heading_path": [f"Part {i}"], "token_count": 40, "text": f"Prose about part {i} of {f}. " * 8}
              for f in "abcd" for i in range(3 if f != "d" else 1)]
    units = plan_units(chunks, SynthConfig(tasks_per_chunk=1, probe_share=0), "p")
    order = coverage_order(units, seed=7)
    assert sorted(u.cache_key for u in order) == sorted(u.cache_key for u in units)
    assert {u.path for u in order[:4]} == {"a.md", "b.md", "c.md", "d.md"}  # every file before any file twice
    assert [u.path for u in order] == [u.path for u in coverage_order(units, seed=7)]
    assert [u.path for u in order] != [u.path for u in coverage_order(units, seed=8)]
    # within a file, its units keep their order
    assert [u.chunk_id for u in order if u.path == "a.md"] == ["a0", "a1", "a2"]


@pytest.mark.slow
def test_heuristic_over_the_standard_library_ends_every_unit(report):
    root = Path(sysconfig.get_paths()["stdlib"])
    cfg = IngestConfig(exclude=["site-packages/**"])
    plan = plan_ingest(root, cfg, {}, chunker_fingerprint(cfg.chunk))
    _, chunks = chunk_files("std", plan.to_chunk, cfg.chunk)
    chunks = chunks.to_pylist()
    synth = SynthConfig()
    units = plan_units(chunks, synth, "std")
    outcomes = Counter()
    samples = 0
    for unit in units:  # an exception here is the bug: no unit may raise out of the generator
        status, rows = heuristic_result(unit, synth)
        outcomes[status, unit.task] += 1
        samples += len(rows)
        assert all(r["instruction"] and r["output"] and r["cache_key"] == unit.cache_key for r in rows)
    assert len(plan.to_chunk) > 1000 and len(units) > 50_000
    assert sum(outcomes.values()) == len(units)
    ok = sum(n for (status, _), n in outcomes.items() if status == "ok")
    assert ok > 0.5 * len(units)
    report(files=len(plan.to_chunk), chunks=len(chunks), units=len(units), units_with_samples=ok,
           no_samples=len(units) - ok, samples=samples)
