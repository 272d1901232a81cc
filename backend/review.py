"""Review: a reviewer's edits and rejections, checked once, for the dashboard's sample browser and `doctune review`
alike, and applied to a sample so that every task type trains and exports what the reviewer saw.

    review lines [{sample_id, reject: true} | {sample_id, instruction?, input?, output?, messages?}]
        ──review_decisions──▶ (edits: sample_id → {field: value}, rejects: [sample_id])
    dataset row + one edit ──apply_edit──▶ the edited row (a multi-turn row's `messages` kept in step)

A multi-turn sample is trained and exported from its `messages`; its `instruction` is the first user turn and its
`output` the last assistant turn (as synthesis makes them). So an edit of either is written into that turn, and an
edit of the turns rewrites both.
"""

from __future__ import annotations

import json
from pathlib import Path

EDITABLE = ("instruction", "input", "output", "messages")
ROLES = ("user", "assistant")


class ReviewError(ValueError):
    """A review that cannot be applied; the message names where (file and line), the field and the fix."""


def review_decisions(lines: list[dict], source: str = "the review") -> tuple[dict[str, dict], list[str]]:
    """Edits and rejections from review lines, every problem collected before raising once.

    Args:
        lines: one dict per sample: `sample_id` and either `reject: true` or the fields to edit (`instruction`,
            `input`, `output` as text; `messages` as a list of {role, content}, roles alternating user/assistant
            and ending with the assistant).
        source: where the lines came from, named in each problem (`EDITS.jsonl`).

    Raises:
        ReviewError: a line without a sample id, an unknown field, a value of the wrong type, a sample named
            twice, or nothing to change.
    """
    edits: dict[str, dict] = {}
    rejects: list[str] = []
    problems: list[str] = []
    for n, line in enumerate(lines, start=1):
        where = f"{source} line {n}"
        if line is None:  # a blank line of a file
            continue
        if not isinstance(line, dict):
            problems.append(f"{where}: must be a JSON object like {{\"sample_id\": \"…\", \"output\": \"…\"}}")
            continue
        sid = line.get("sample_id")
        if not isinstance(sid, str) or not sid:
            problems.append(f"{where}: sample_id is missing; name the sample (`doctune export` writes its id)")
            continue
        if sid in edits or sid in rejects:
            problems.append(f"{where}: sample {sid} is named again; put its edits on one line")
            continue
        fields = {k: v for k, v in line.items() if k != "sample_id"}
        unknown = sorted(set(fields) - set(EDITABLE) - {"reject"})
        if unknown:
            problems.append(f"{where}: field {', '.join(unknown)} cannot be edited; use {', '.join(EDITABLE)} "
                            "or reject: true")
            continue
        if "reject" in fields:
            if fields["reject"] is not True or len(fields) > 1:
                problems.append(f"{where}: reject must be true and alone on its line (an edit of a rejected "
                                "sample means nothing)")
            else:
                rejects.append(sid)
            continue
        if not fields:
            problems.append(f"{where}: nothing to change for {sid}; add a field to edit or reject: true")
            continue
        for k, v in fields.items():
            problem = messages_problem(v) if k == "messages" else (
                None if isinstance(v, str) else "must be text")
            if problem:
                problems.append(f"{where}: field {k} {problem}")
        edits[sid] = fields
    if not problems and not edits and not rejects:
        problems.append(f"{source}: nothing to change; edit or reject at least one sample")
    if problems:
        raise ReviewError("\n".join(problems))
    return edits, rejects


def messages_problem(messages) -> str | None:
    """Why `messages` is no trainable conversation (None when it is)."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str)
            for m in messages):
        return 'must be a list of {"role": …, "content": "…"} turns'
    roles = [m["role"] for m in messages]
    if roles != [ROLES[i % 2] for i in range(len(roles))] or len(roles) % 2:
        return f"must alternate user/assistant from the user and end with the assistant (got {roles})"
    if not all(m["content"].strip() for m in messages):
        return "has an empty turn; write it or reject the sample"
    return None


def apply_edit(row: dict, fields: dict) -> dict:
    """`row` with `fields` applied; a multi-turn row keeps `instruction`/`output` and its turns in step.

    Raises:
        ReviewError: `messages` edited on a single-turn sample.
    """
    messages = row.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if "messages" in fields and not messages:
        raise ReviewError(f"sample {row.get('sample_id')} is single-turn: edit its instruction, input or output, "
                          "not messages")
    out = dict(row, **{k: v for k, v in fields.items() if k != "messages"})
    if not messages:
        return out
    turns = [dict(m) for m in fields.get("messages", messages)]
    users = [i for i, m in enumerate(turns) if m["role"] == "user"]
    answers = [i for i, m in enumerate(turns) if m["role"] == "assistant"]
    if "instruction" in fields and users:
        turns[users[0]]["content"] = fields["instruction"]
    if "output" in fields and answers:
        turns[answers[-1]]["content"] = fields["output"]
    out["messages"] = turns
    if users:
        out["instruction"] = turns[users[0]]["content"]
    if answers:
        out["output"] = turns[answers[-1]]["content"]
    return out


def read_review_file(path: Path) -> list[dict]:
    """The lines of a JSONL review file, in order (a blank line is None).

    Raises:
        ReviewError: a missing or unreadable file, or a line that is not JSON (with its line and column).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc}); give a UTF-8 JSONL file, "
                          "one sample per line") from None
    lines, problems = [], []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            lines.append(None)
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            problems.append(f"{path} line {n}: not JSON ({exc.msg} at column {exc.colno}); write one JSON object "
                            "per line")
    if problems:
        raise ReviewError("\n".join(problems))
    return lines  # a blank line stays None, so later problems still name the file's own line numbers
