"""What ships answers like what was evaluated: replayed answers against the outputs `doctune eval` stored.

    eval_results rows (prompt, base_output, tuned_output) + the answers a shipped model gave to the same
    prompts, greedy ──compare──▶ {"passed", "checked", "identical", "differences": [first difference each]}

The evaluation's stored outputs are the reference: a served endpoint or an exported bundle that renders the
prompt differently (a lost or changed chat template, another system prompt, other stop tokens) answers
differently under greedy decoding, and the first differing character says where. Pure logic: who produces
the answers (an HTTP endpoint, a model loaded in-process) is the caller's business.
"""

from __future__ import annotations

CONTEXT = 40  # characters shown on each side of a first difference


def first_difference(expected: str, got: str) -> dict | None:
    """None when the texts are identical, else where they first differ and a little text around it."""
    if expected == got:
        return None
    at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    start = max(0, at - CONTEXT)
    return {"offset": at, "expected": expected[start:at + CONTEXT], "got": got[start:at + CONTEXT]}


def compare(rows: list[dict], answers: list[str], *, side: str = "tuned") -> dict:
    """Each stored evaluation row's `{side}_output` against the replayed answer at the same position.

    Args:
        rows: eval_results rows (each with sample_id, eval_set, prompt and `{side}_output`).
        answers: the shipped model's greedy answers, one per row, in the rows' order.
        side: "tuned" (the adapter) or "base".

    Returns:
        {"passed": every answer identical, "checked": n, "identical": n, "differences": [{"sample_id",
        "eval_set", "prompt" (the last user turn), "offset", "expected", "got"}, ...]}.
    """
    if side not in ("tuned", "base"):
        raise ValueError(f"side must be 'tuned' or 'base', got {side!r}")
    if len(rows) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(rows)} evaluation rows")
    differences = []
    for row, got in zip(rows, answers, strict=True):
        diff = first_difference(row.get(f"{side}_output") or "", got or "")
        if diff is not None:
            users = [m.get("content", "") for m in row.get("prompt") or [] if m.get("role") == "user"]
            differences.append({"sample_id": row.get("sample_id"), "eval_set": row.get("eval_set"),
                                "prompt": users[-1] if users else "", **diff})
    return {"passed": not differences, "checked": len(rows), "identical": len(rows) - len(differences),
            "differences": differences}
