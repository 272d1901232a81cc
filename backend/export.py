"""Export: curated samples → dataset files that LLaMA-Factory, `datasets` and OpenAI-style trainers load.

One file per split in the chosen format, each row holding only that format's keys, so trainers that
reject unknown keys accept them. Provenance (which lines of which file at which git commit, or the file's
content hash outside git; which run and generator made the sample) goes to a sidecar `{split}.provenance.jsonl`,
line for line with the data file.
Next to them: `dataset_info.json` (LLaMA-Factory's dataset registry, one entry per split) and
`manifest.json` (counts and a sha256 per file).

| format   | file            | row |
|----------|-----------------|-----|
| alpaca   | `{split}.jsonl` | instruction, input, output (+ history [[user, assistant], ...], + system) |
| sharegpt | `{split}.jsonl` | conversations [{from: human/gpt, value}], (+ system) |
| openai   | `{split}.jsonl` | messages [{role: system/user/assistant, content}] |
| parquet  | `{split}.parquet` | the alpaca columns plus sample_id, split, task, language, messages (JSON), provenance |

The `probe` split (knowledge probes, never trained on) is exported like the others; its short expected facts
are in the provenance sidecar (`fact`) and the Parquet column of that name.

Every row is built from `backend.chat.conversation`, the same turns training and evaluation see.

Files are written safely: the destination must be a new or empty folder (or `force`), never a file, a device or a
folder under /proc, /sys or /dev; each file is written into a new temporary file created exclusively in that folder
(a random name, never through a link) and renamed over its real name, so a crash leaves no half file and a link
planted at either name is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from backend.chat import as_text, conversation
from backend.export_config import FORMATS

SPLIT_ORDER = ("train", "val", "test", "probe")
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Folders of the kernel's and the devices' files: never an export's destination."""
PROVENANCE_KEYS = ("sample_id", "path", "start_line", "end_line", "source_commit", "file_sha256", "chunk_id",
                   "run_id", "generator", "template_version", "task", "fact")

SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}

PARQUET_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("split", pa.string()), ("task", pa.string()), ("language", pa.string()),
    ("system", pa.string()), ("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
    ("history", pa.list_(pa.list_(pa.string()))), ("messages", pa.string()),
    ("project", pa.string()), ("path", pa.string()), ("start_line", pa.int32()), ("end_line", pa.int32()),
    ("chunk_id", pa.string()), ("run_id", pa.string()), ("generator", pa.string()),
    ("template_version", pa.string()), ("fact", pa.string()), ("source_commit", pa.string()),
    ("file_sha256", pa.string()),
])


def alpaca_row(sample: dict, system_prompt: str | None = None) -> dict:
    """LLaMA-Factory alpaca: the last exchange as instruction/output, earlier ones as history."""
    system, turns = conversation(sample, system_prompt)
    if sample.get("messages"):
        pairs = [[turns[i][1], turns[i + 1][1]] for i in range(0, len(turns), 2)]
        row = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1], "history": pairs[:-1]}
    else:
        row = {"instruction": as_text(sample.get("instruction")), "input": as_text(sample.get("input")),
               "output": as_text(sample.get("output"))}
    if system is not None:
        row["system"] = system
    return row


def sharegpt_row(sample: dict, system_prompt: str | None = None) -> dict:
    """ShareGPT: conversations of human/gpt turns, the system prompt beside them."""
    system, turns = conversation(sample, system_prompt)
    row: dict = {"conversations": [{"from": "human" if r == "user" else "gpt", "value": c} for r, c in turns]}
    if system is not None:
        row["system"] = system
    return row


def openai_row(sample: dict, system_prompt: str | None = None) -> dict:
    """OpenAI chat fine-tuning: messages, the system prompt first."""
    system, turns = conversation(sample, system_prompt)
    messages = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": messages + [{"role": r, "content": c} for r, c in turns]}


def parquet_row(sample: dict, system_prompt: str | None = None) -> dict:
    """Flat columns: the alpaca fields, the raw messages as JSON, and provenance."""
    a = alpaca_row(sample, system_prompt)
    messages = sample.get("messages")
    return {
        "sample_id": as_text(sample.get("sample_id")), "split": sample.get("split"),
        "task": sample.get("task"), "language": sample.get("language"), "system": a.get("system"),
        "instruction": a["instruction"], "input": a["input"], "output": a["output"],
        "history": a.get("history", []),
        "messages": json.dumps(messages, ensure_ascii=False) if messages else None,
        "project": sample.get("project"), "path": sample.get("path"),
        "start_line": sample.get("start_line"), "end_line": sample.get("end_line"),
        "chunk_id": sample.get("chunk_id"), "run_id": _opt_str(sample.get("run_id")),
        "generator": sample.get("generator"), "template_version": _opt_str(sample.get("template_version")),
        "fact": _opt_str(sample.get("fact")), "source_commit": sample.get("source_commit"),
        "file_sha256": sample.get("file_sha256"),
    }


def _opt_str(value) -> str | None:
    """str(value), keeping None."""
    return None if value is None else str(value)


ROW_BUILDERS = {"alpaca": alpaca_row, "sharegpt": sharegpt_row, "openai": openai_row, "parquet": parquet_row}


def _uniform(rows: list[dict], defaults: dict) -> list[dict]:
    """Give every row of a file the keys any row has, so loaders infer one schema for the file."""
    keys = {k for r in rows for k in r}
    return [{**r, **{k: v for k, v in defaults.items() if k in keys and k not in r}} for r in rows]


def _split_names(samples: list[dict]) -> list[str]:
    """The splits present, train/val/test first, then the rest by name."""
    present = {s["split"] for s in samples}
    return [n for n in SPLIT_ORDER if n in present] + sorted(present - set(SPLIT_ORDER))


def check_destination(out_dir: Path, force: bool = False) -> None:
    """Refuse a destination no export may write to; a folder that does not exist yet is fine (it is created).

    Raises:
        ValueError: it is under /proc, /sys or /dev, is a file or a device, is not writable, or already holds files
            and `force` is off.
    """
    real = Path(out_dir).resolve()  # through links: a link to /proc is /proc
    if real.exists() and not real.is_dir():
        mode = real.stat().st_mode
        kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a file"
        raise ValueError(f"{out_dir} is {kind}, not a folder; name a new or empty folder with --out")
    system = next((d for d in SYSTEM_FOLDERS if real == d or d in real.parents), None)
    if system is not None:
        raise ValueError(f"{out_dir} is under {system}, the system's own files; name a folder of yours with --out")
    if not real.exists():
        return
    if not os.access(real, os.W_OK | os.X_OK):
        raise ValueError(f"{out_dir} is not writable for you; name a folder you can write with --out")
    entries = sorted(os.listdir(real))
    if entries and not force:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"{out_dir} is not empty ({len(entries)} entries: {shown}); name a new or empty folder, or "
                         f"pass --force to replace DocTune's files in it (every other file is left alone)")


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write` into a new temporary file in `path`'s folder, then rename it over `path` (see the module's docstring)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; an export is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ValueError(f"cannot write {path}: {exc.strerror}; check the folder given with --out") from exc
        raise


def _write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda f: f.write(data))


def _jsonl(rows: list[dict]) -> bytes:
    """UTF-8 JSON lines, non-ASCII kept as is."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _info_entry(fmt: str, file_name: str, rows: list[dict]) -> dict:
    """This split's entry in LLaMA-Factory's dataset_info.json."""
    if fmt == "sharegpt":
        columns = {"messages": "conversations"}
        if any("system" in r for r in rows):
            columns["system"] = "system"
        return {"file_name": file_name, "formatting": "sharegpt", "columns": columns, "tags": SHAREGPT_TAGS}
    if fmt == "openai":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": OPENAI_TAGS}
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    if fmt == "parquet" or any("history" in r for r in rows):
        columns["history"] = "history"
    if any(r.get("system") is not None for r in rows):
        columns["system"] = "system"
    return {"file_name": file_name, "formatting": "alpaca", "columns": columns}


def export_dataset(samples: list[dict], fmt: str, out_dir: Path, name: str,
                   system_prompt: str | None = None, force: bool = False) -> list[Path]:
    """Write one dataset file per split, provenance sidecars, dataset_info.json and manifest.json.

    out_dir must be new or empty unless `force`: then files of the names written are replaced, others left alone.

    Args:
        samples: curated samples, each with a `split` (as `curate` returns them in `kept`).
        fmt: alpaca, sharegpt, openai or parquet.
        out_dir: the folder to write (created if missing); LLaMA-Factory's `dataset_dir`.
        name: the dataset's name; its dataset_info.json entries are `{name}_{split}`.
        system_prompt: a system prompt for every row that has none of its own, or None.
        force: write into a folder that already holds files.

    Returns:
        The paths written: data files (in split order), provenance sidecars, dataset_info.json,
        manifest.json.

    Raises:
        ValueError: an unknown format, a sample without a split, a conversation that does not
            alternate user/assistant, a destination `check_destination` refuses, or one that cannot be
            created or written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    missing = [as_text(s.get("sample_id")) for s in samples if not s.get("split")]
    if missing:
        raise ValueError(f"samples without a split (curate them first): {', '.join(missing[:10])}")
    out_dir = Path(out_dir)
    check_destination(out_dir, force)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {out_dir}: {exc.strerror}; name a folder you can write with --out") from None
    build = ROW_BUILDERS[fmt]
    data_files, sidecars, info, counts = [], [], {}, {}
    for split in _split_names(samples):
        chosen = [s for s in samples if s["split"] == split]
        rows = [build(s, system_prompt) for s in chosen]
        if fmt == "parquet":
            path = out_dir / f"{split}.parquet"
            table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
            _write_atomic(path, lambda f: pq.write_table(table, f))
        else:
            rows = _uniform(rows, {"history": [], "system": system_prompt or ""})
            path = out_dir / f"{split}.jsonl"
            _write_bytes(path, _jsonl(rows))
        sidecar = out_dir / f"{split}.provenance.jsonl"
        _write_bytes(sidecar, _jsonl([{k: s.get(k) for k in PROVENANCE_KEYS} for s in chosen]))
        data_files.append(path)
        sidecars.append(sidecar)
        info[f"{name}_{split}"] = _info_entry(fmt, path.name, rows)
        counts[split] = len(rows)
    info_path = out_dir / "dataset_info.json"
    _write_bytes(info_path, (json.dumps(info, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    written = data_files + sidecars + [info_path]
    manifest = {
        "name": name,
        "format": fmt,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": counts,
        "total": sum(counts.values()),
        "system_prompt": system_prompt,
        "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in written},
    }
    manifest_path = out_dir / "manifest.json"
    _write_bytes(manifest_path, (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return written + [manifest_path]
