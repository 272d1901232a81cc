"""GGUF (llama.cpp, Ollama, LM Studio) from a merged model folder, through llama.cpp's own converter.

    merged 16-bit folder ──convert_hf_to_gguf.py──▶ model-f16.gguf (or q8_0, bf16, f32)
        ──llama-quantize (when built)──▶ model-q4_k_m.gguf

The converter is a Python script that reads safetensors shard by shard on the CPU: no GPU, no 16-bit weights
in GPU memory, and nothing is downloaded or built here. llama.cpp is found where Unsloth looks for it
(`UNSLOTH_LLAMA_CPP_PATH`, then `~/.unsloth/llama.cpp`) unless a folder is named; without it the error says
what to install and where.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_TYPES = ("f16", "bf16", "q8_0", "f32")
"""What the converter writes by itself; anything else needs the `llama-quantize` binary."""
QUANTIZE_BINARIES = ("llama-quantize", "build/bin/llama-quantize", "quantize")
INSTALL_HINT = ("install llama.cpp: `git clone https://github.com/ggml-org/llama.cpp ~/.unsloth/llama.cpp && "
                "pip install -r ~/.unsloth/llama.cpp/requirements/requirements-convert_hf_to_gguf.txt` (or set "
                "UNSLOTH_LLAMA_CPP_PATH / pass --llama-cpp DIR to a checkout holding convert_hf_to_gguf.py); build "
                "it (`cmake -B build && cmake --build build --target llama-quantize`) for quantizations other than "
                + "/".join(CONVERTER_TYPES))


class LlamaCppMissing(ValueError):
    """No llama.cpp converter where it was looked for; the message names the places and what to install."""


def find_llama_cpp(folder: str | Path | None = None) -> Path:
    """The llama.cpp folder holding `convert_hf_to_gguf.py`: `folder`, else UNSLOTH_LLAMA_CPP_PATH, else
    ~/.unsloth/llama.cpp.

    Raises:
        LlamaCppMissing: none of them has the converter.
    """
    env = os.environ.get("UNSLOTH_LLAMA_CPP_PATH")
    candidates = [Path(folder).expanduser()] if folder else \
        [Path(p).expanduser() for p in (env, "~/.unsloth/llama.cpp") if p]
    for c in candidates:
        if (c / CONVERTER).is_file():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise LlamaCppMissing(f"GGUF needs llama.cpp's {CONVERTER}, not found in {looked}; {INSTALL_HINT}")


def quantize_binary(llama_cpp: Path) -> Path | None:
    """llama.cpp's `llama-quantize` when it was built there (or is on PATH), else None."""
    for name in QUANTIZE_BINARIES:
        if (llama_cpp / name).is_file() and os.access(llama_cpp / name, os.X_OK):
            return llama_cpp / name
    found = shutil.which("llama-quantize")
    return Path(found) if found else None


def convert_to_gguf(merged_dir: Path, out_dir: Path, quantization: str = "q8_0",
                    llama_cpp: str | Path | None = None) -> list[Path]:
    """GGUF file(s) of a merged model folder, in `out_dir`; returns the files written (the last is the one to use).

    `quantization` one of CONVERTER_TYPES is written by the converter directly; any other (q4_k_m, q5_k_m, ...)
    is written as f16 first, then quantized by `llama-quantize`.

    Raises:
        LlamaCppMissing: no converter, or a quantization that needs `llama-quantize` and it is not built.
        RuntimeError: the converter or quantizer failed (its last lines of output say why).
    """
    folder = find_llama_cpp(llama_cpp)
    quantization = quantization.lower()
    quantizer = None if quantization in CONVERTER_TYPES else quantize_binary(folder)
    if quantization not in CONVERTER_TYPES and quantizer is None:
        raise LlamaCppMissing(f"GGUF {quantization} needs llama.cpp's llama-quantize, not built in {folder}; use one "
                              f"of {', '.join(CONVERTER_TYPES)}, or {INSTALL_HINT}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = quantization if quantizer is None else "f16"
    converted = out_dir / f"model-{first}.gguf"
    _run([sys.executable, str(folder / CONVERTER), str(merged_dir), "--outfile", str(converted),
          "--outtype", first], "convert_hf_to_gguf.py")
    files = [converted]
    if quantizer is not None:
        quantized = out_dir / f"model-{quantization}.gguf"
        _run([str(quantizer), str(converted), str(quantized), quantization.upper()], "llama-quantize")
        files.append(quantized)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise RuntimeError(f"llama.cpp reported success but wrote no {missing[0]}")
    return files


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {tail}")
