"""Which torch build `make setup` installs: one that can see the GPU `nvidia-smi` shows, or the CPU build.

PyPI's torch 2.14.1 is a CUDA 13 build: it needs driver R580 or newer and has no kernels below sm_75, so on
an older driver or card `torch.cuda.is_available()` is False although `nvidia-smi` works. The choice therefore
follows the driver: the CUDA version `nvidia-smi` reports (the newest its driver runs) and the oldest card's
compute capability pick PyPI's default, PyTorch's cu128 or its cu126 index. Without a GPU, the CPU build.

    python -m backend.torch_build state                       # one line: the GPU state the install depends on
    python -m backend.torch_build install --python PY [--dry-run]   # the pip command (printed; run unless dry)
    python -m backend.torch_build check --python PY           # exit 1 when torch cannot see nvidia-smi's GPU

Standard library only: the Makefile runs it before the venv has anything installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

TORCH_GPU = "2.14.1"
"""The project's upper pin (pyproject.toml): the release whose PyPI wheel is CUDA 13."""
TORCH_CPU = "2.13.0+cpu"
"""The CPU build: PyTorch's CPU index has it, and a local file may provide it (pip's find-links)."""
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
CPU_INDEX = PYTORCH_INDEX + "cpu"


class SetupError(Exception):
    """The GPU cannot get a torch build of this release (too old a driver), or torch cannot see it."""


@dataclass(frozen=True)
class GpuState:
    driver: str
    """The driver version, e.g. `575.57.08`."""
    cuda: tuple[int, int]
    """The newest CUDA the driver runs, from nvidia-smi's header (`CUDA Version: 12.9`)."""
    gpus: tuple[tuple[str, tuple[int, int]], ...]
    """(name, compute capability) of every card."""

    def line(self) -> str:
        cards = "; ".join(f"{name} (sm_{major}{minor})" for name, (major, minor) in self.gpus)
        return f"driver={self.driver} cuda={self.cuda[0]}.{self.cuda[1]} gpus={cards}"


@dataclass(frozen=True)
class TorchBuild:
    requirement: str
    """What pip installs, e.g. `torch==2.14.1+cu128`."""
    pip_args: tuple[str, ...]
    """Index options: none for PyPI's default, `--index-url` of PyTorch's CUDA index, an extra CPU index."""
    why: str


def _run(cmd: list[str]) -> str | None:
    """stdout of `cmd`, or None where it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None and "/" not in cmd[0]:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpu_state() -> GpuState | None:
    """What `nvidia-smi` shows; None where it is missing or finds no GPU."""
    query = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    header = _run(["nvidia-smi"])
    if header is not None and query is None and "CUDA Version" in header:  # compute_cap: drivers 510 and newer
        raise SetupError("nvidia-smi shows a GPU but cannot report its compute capability: the driver predates "
                         "R510, too old for any torch build this project installs; update the NVIDIA driver")
    if not query or not query.strip() or header is None:
        return None
    gpus, drivers = [], set()
    for row in query.strip().splitlines():
        name, driver, cap = (part.strip() for part in row.rsplit(",", 2))
        major, minor = cap.split(".")
        gpus.append((name, (int(major), int(minor))))
        drivers.add(driver)
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header)
    if found is None:
        raise SetupError("nvidia-smi shows a GPU but no `CUDA Version:` in its header; update the NVIDIA driver")
    return GpuState(driver=sorted(drivers)[0], cuda=(int(found[1]), int(found[2])), gpus=tuple(gpus))


def choose_torch(state: GpuState | None) -> TorchBuild:
    """The torch build for `state` (None: no GPU).

    Raises:
        SetupError: the driver runs no CUDA this torch release is built for (below 12.6).
    """
    if state is None:
        return TorchBuild(f"torch=={TORCH_CPU}", ("--extra-index-url", CPU_INDEX), "no GPU: the CPU build")
    oldest = min(cap for _, cap in state.gpus)
    if state.cuda >= (13, 0) and oldest >= (7, 5):
        return TorchBuild(f"torch=={TORCH_GPU}", (), "driver runs CUDA 13 (R580+): PyPI's default build")
    for cuda, min_cap in (((12, 8), (7, 0)), ((12, 6), (5, 0))):
        if state.cuda >= cuda and oldest >= min_cap:
            tag = f"cu{cuda[0]}{cuda[1]}"
            why = (f"driver {state.driver} runs CUDA {state.cuda[0]}.{state.cuda[1]}, oldest card "
                   f"sm_{oldest[0]}{oldest[1]}: PyTorch's {tag} build")
            return TorchBuild(f"torch=={TORCH_GPU}+{tag}", ("--index-url", PYTORCH_INDEX + tag), why)
    raise SetupError(
        f"nvidia-smi shows {state.line()}, but torch {TORCH_GPU} is built for CUDA 12.6 or newer (driver 560+) "
        f"and sm_50 or newer; update the NVIDIA driver, or set up without the GPU (CUDA_VISIBLE_DEVICES= is not "
        f"enough: remove nvidia-smi from PATH for `make setup`)")


def installed_torch(python: str) -> dict | None:
    """{"version", "cuda", "available"} of the torch `python` imports; None where it has none."""
    code = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
            "'available': torch.cuda.is_available()}))")
    out = _run([python, "-c", code])
    return json.loads(out.strip().splitlines()[-1]) if out else None


def install_command(build: TorchBuild, python: str, installed: str | None) -> list[str] | None:
    """The pip command installing `build` into `python`'s environment; None when it is installed already.

    The same release with another local label (`2.14.1+cpu` where `2.14.1` is wanted) satisfies pip's
    `==`, so it is reinstalled by force; a venv first built without a GPU keeps its CPU torch otherwise.
    """
    wanted = build.requirement.split("==", 1)[1]
    if installed == wanted:
        return None
    force = installed is not None and installed.split("+")[0] == wanted.split("+")[0]
    return [python, "-m", "pip", "install", "-q", *(["--force-reinstall"] if force else []), *build.pip_args,
            build.requirement]


def check_torch_sees_gpu(state: GpuState | None, torch_info: dict | None) -> None:
    """Raises SetupError when nvidia-smi shows a GPU and the installed torch cannot use it."""
    if state is None or (torch_info is not None and torch_info["available"]):
        return
    if torch_info is None:
        build = "no torch"
    else:
        kind = "a CPU build" if torch_info["cuda"] is None else f"CUDA {torch_info['cuda']}"
        build = f"torch {torch_info['version']} ({kind})"
    raise SetupError(f"nvidia-smi shows {state.line()}, but {build} cannot see it, so a GPU preset would refuse "
                     f"to start; `make clean setup` installs the build this driver runs "
                     f"({choose_torch(state).requirement})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.torch_build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["state", "install", "check"])
    ap.add_argument("--python", default=sys.executable, help="the venv's python (install, check)")
    ap.add_argument("--dry-run", action="store_true", help="print the pip command without running it")
    args = ap.parse_args(argv)
    try:
        state = gpu_state()
        if args.command == "state":
            print(state.line() if state else "none")
        elif args.command == "install":
            build = choose_torch(state)
            info = installed_torch(args.python)
            cmd = install_command(build, args.python, info and info["version"])
            print(f"torch: {build.why}; " + ("already installed" if cmd is None else " ".join(cmd)))
            if cmd is not None and not args.dry_run:
                return subprocess.run(cmd).returncode
        else:
            check_torch_sees_gpu(state, installed_torch(args.python))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
