"""The bundled sample repository is a real library: enough modules and pages, passing tests, runnable examples."""

import ast
import subprocess
import sys

import pytest

from backend.config import SAMPLE_REPO


def test_sample_repository_size_and_shape():
    modules = [p for p in (SAMPLE_REPO / "tidemark").glob("*.py") if p.name != "__init__.py"]
    assert len(modules) >= 12
    for module in modules:
        tree = ast.parse(module.read_text())
        assert ast.get_docstring(tree), f"{module.name} has no module docstring"
    pages = [p for p in (SAMPLE_REPO / "docs").rglob("*") if p.suffix in {".md", ".rst"}]
    assert len(pages) >= 15
    assert any(p.suffix == ".rst" for p in pages)
    assert (SAMPLE_REPO / "docs/api/openapi.yaml").exists() and list(SAMPLE_REPO.rglob("*.ipynb"))


@pytest.mark.slow
def test_sample_repository_tests_pass():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=SAMPLE_REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (SAMPLE_REPO / "examples").glob("*.py")))
def test_sample_examples_run(script):
    out = subprocess.run([sys.executable, f"examples/{script}"], cwd=SAMPLE_REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
