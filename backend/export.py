"""Export: curated samples → dataset files that LLaMA-Factory, `datasets` and OpenAI-style trainers load.

One file per split in the chosen format, each row holding only that format's keys, so trainers that
reject unknown keys accept them. Provenance (which chunk of which file, which run and generator made
the sample) goes to a sidecar `{split}.provenance.jsonl`, line for line with the data file.
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
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backend.chat import as_text, conversation
from backend.export_config import FORMATS

SPLIT_ORDER = ("train", "val", "test", "probe")
PROVENANCE_KEYS = ("sample_id", "path", "start_line", "end_line", "chunk_id", "run_id", "generator",
                   "template_version", "task", "fact")

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
    ("template_version", pa.string()), ("fact", pa.string()),
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
        "fact": _opt_str(sample.get("fact")),
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling, so a crash never leaves half a file under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
                   system_prompt: str | None = None) -> list[Path]:
    """Write one dataset file per split, provenance sidecars, dataset_info.json and manifest.json.

    Files of the same names in out_dir are replaced; other files are left alone.

    Args:
        samples: curated samples, each with a `split` (as `curate` returns them in `kept`).
        fmt: alpaca, sharegpt, openai or parquet.
        out_dir: the folder to write (created if missing); LLaMA-Factory's `dataset_dir`.
        name: the dataset's name; its dataset_info.json entries are `{name}_{split}`.
        system_prompt: a system prompt for every row that has none of its own, or None.

    Returns:
        The paths written: data files (in split order), provenance sidecars, dataset_info.json,
        manifest.json.

    Raises:
        ValueError: an unknown format, a sample without a split, or a conversation that does not
            alternate user/assistant.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    missing = [as_text(s.get("sample_id")) for s in samples if not s.get("split")]
    if missing:
        raise ValueError(f"samples without a split (curate them first): {', '.join(missing[:10])}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = ROW_BUILDERS[fmt]
    data_files, sidecars, info, counts = [], [], {}, {}
    for split in _split_names(samples):
        chosen = [s for s in samples if s["split"] == split]
        rows = [build(s, system_prompt) for s in chosen]
        if fmt == "parquet":
            path = out_dir / f"{split}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), tmp)
            os.replace(tmp, path)
        else:
            rows = _uniform(rows, {"history": [], "system": system_prompt or ""})
            path = out_dir / f"{split}.jsonl"
            _write_atomic(path, _jsonl(rows))
        sidecar = out_dir / f"{split}.provenance.jsonl"
        _write_atomic(sidecar, _jsonl([{k: s.get(k) for k in PROVENANCE_KEYS} for s in chosen]))
        data_files.append(path)
        sidecars.append(sidecar)
        info[f"{name}_{split}"] = _info_entry(fmt, path.name, rows)
        counts[split] = len(rows)
    info_path = out_dir / "dataset_info.json"
    _write_atomic(info_path, (json.dumps(info, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
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
    _write_atomic(manifest_path, (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return written + [manifest_path]
