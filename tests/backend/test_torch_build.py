"""`make setup`'s torch choice, with a fake `nvidia-smi` on PATH (no GPU here): the build follows the driver,
the install stamp follows the GPU state, and a GPU torch cannot see stops the setup. Nothing is installed: the
install runs dry, and the shared venv's torch (a CPU build) is only imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backend.config import REPO_ROOT

HEADER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""


def fake_nvidia_smi(folder: Path, driver: str, cuda: str, cards: list[tuple[str, str]]) -> Path:
    """An `nvidia-smi` answering the header and the csv query as a real one does; returns its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{name}, {driver}, {cap}" for name, cap in cards)
    script = folder / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
case "$1" in
  --query-gpu=*) cat <<'ROWS'
{rows}
ROWS
  ;;
  -L) echo "GPU 0: {cards[0][0]} (UUID: GPU-0)" ;;
  *) cat <<'HEAD'
{HEADER.format(driver=driver, cuda=cuda)}HEAD
  ;;
esac
""")
    script.chmod(0o755)
    return folder


def run_tool(*args: str, path: Path | None) -> subprocess.CompletedProcess:
    """`python -m backend.torch_build ARGS` with `path` first on PATH (None: no nvidia-smi at all)."""
    env = {**os.environ, "PATH": (f"{path}:" if path else "") + "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "backend.torch_build", *args, "--python", sys.executable],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


LAPTOP = [("NVIDIA GeForce RTX 3060 Laptop GPU", "8.6")]


@pytest.mark.parametrize("driver, cuda, cards, command", [
    ("580.65.06", "13.0", LAPTOP, "install -q torch==2.14.1"),
    ("575.57.08", "12.9", LAPTOP, "install -q --index-url https://download.pytorch.org/whl/cu128 torch==2.14.1+cu128"),
    ("570.133.20", "12.8", [("Tesla T4", "7.5")],
     "--index-url https://download.pytorch.org/whl/cu128 torch==2.14.1+cu128"),
    # CUDA 13 drops cards below sm_75: a V100 on a new driver still gets a CUDA 12 build
    ("580.65.06", "13.0", [("Tesla V100-SXM2-16GB", "7.0")], "--index-url https://download.pytorch.org/whl/cu128"),
    ("560.35.03", "12.6", [("NVIDIA GeForce GTX 1080", "6.1")], "--index-url https://download.pytorch.org/whl/cu126"),
    # two cards: the older one decides
    ("580.65.06", "13.0", [("NVIDIA H100 80GB HBM3", "9.0"), ("Tesla P100-PCIE-16GB", "6.0")],
     "--index-url https://download.pytorch.org/whl/cu126 torch==2.14.1+cu126"),
])
def test_the_torch_build_follows_the_driver(tmp_path, driver, cuda, cards, command):
    out = run_tool("install", "--dry-run", path=fake_nvidia_smi(tmp_path, driver, cuda, cards))
    assert out.returncode == 0, out.stderr
    assert command in out.stdout and "-m pip install" in out.stdout
    # the shared venv's 2.13.0+cpu differs in release from 2.14.1: a plain install replaces it, no force needed
    assert "--force-reinstall" not in out.stdout


def test_without_a_gpu_the_cpu_build_is_kept(tmp_path):
    out = run_tool("install", "--dry-run", path=None)
    assert out.returncode == 0 and "no GPU: the CPU build; already installed" in out.stdout
    assert run_tool("state", path=None).stdout.strip() == "none"
    assert run_tool("check", path=None).returncode == 0


def test_a_driver_too_old_for_any_build_is_refused_with_the_fix(tmp_path):
    out = run_tool("install", "--dry-run", path=fake_nvidia_smi(tmp_path, "535.183.01", "12.2", LAPTOP))
    assert out.returncode == 1 and "driver=535.183.01 cuda=12.2" in out.stderr
    assert "update the NVIDIA driver" in out.stderr


def test_a_driver_too_old_to_report_compute_capability_is_refused(tmp_path):
    script = tmp_path / "nvidia-smi"
    script.write_text('#!/bin/sh\ncase "$1" in\n  --query-gpu=*) echo "Field is not a valid field to query."; exit 2;;\n'
                      '  *) echo "| NVIDIA-SMI 470.82.01  Driver Version: 470.82.01  CUDA Version: 11.4 |";;\nesac\n')
    script.chmod(0o755)
    out = run_tool("state", path=tmp_path)
    assert out.returncode == 1 and "predates R510" in out.stderr and "update the NVIDIA driver" in out.stderr


def test_setup_stops_loudly_when_torch_cannot_see_the_gpu_nvidia_smi_shows(tmp_path):
    out = run_tool("check", path=fake_nvidia_smi(tmp_path, "575.57.08", "12.9", LAPTOP))
    assert out.returncode == 1
    assert "RTX 3060 Laptop GPU (sm_86)" in out.stderr and "torch 2.13.0+cpu (a CPU build) cannot see it" in out.stderr
    assert "make clean setup" in out.stderr and "torch==2.14.1+cu128" in out.stderr


def test_the_same_release_with_another_build_is_reinstalled_by_force():
    from backend.torch_build import TorchBuild, install_command

    pypi = TorchBuild("torch==2.14.1", (), "")
    assert "--force-reinstall" in install_command(pypi, "py", "2.14.1+cpu")
    assert install_command(pypi, "py", "2.14.1") is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_the_install_stamp_is_redone_when_the_gpu_state_changes(tmp_path):
    """The Makefile's real rules, with the stamp's recipe replaced by one that only records that it ran."""
    work = tmp_path / "checkout"
    (work / "backend").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "backend/__init__.py", "backend/torch_build.py"):
        shutil.copy(REPO_ROOT / name, work / name)
    (work / "record.mk").write_text("$(STAMP):\n\techo built >> built.log\n\ttouch $@\n")

    def make(path: Path | None) -> int:
        env = {**os.environ, "PATH": (f"{path}:" if path else "") + "/usr/bin:/bin", "MAKEFLAGS": ""}
        subprocess.run(["make", "-f", "Makefile", "-f", "record.mk", "PY=" + sys.executable, ".venv/.installed"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120, check=True)
        log = work / "built.log"
        return len(log.read_text().splitlines()) if log.is_file() else 0

    assert make(None) == 1
    assert make(None) == 1  # nothing changed: not redone
    old_driver = fake_nvidia_smi(tmp_path / "old", "575.57.08", "12.9", LAPTOP)
    assert make(old_driver) == 2  # a GPU appeared
    assert (work / ".venv/.gpu-state").read_text().startswith("driver=575.57.08 cuda=12.9")
    assert make(old_driver) == 2
    assert make(fake_nvidia_smi(tmp_path / "new", "580.65.06", "13.0", LAPTOP)) == 3  # the driver changed


def test_the_gpu_extra_pins_the_unsloth_release_that_was_read():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert {"unsloth==2026.10.9", "unsloth_zoo==2026.10.9"} <= set(extras)
