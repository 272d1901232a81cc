"""Chat formatting: one DocTune sample → the conversation every later stage sees.

    sample (instruction, input, output | messages) ──conversation──▶ (system, [(role, content), ...])
        ──to_prompt_completion──▶ {"prompt": [...], "completion": [last assistant turn]}  (train, evaluate)
        ──render_ids(tokenizer, prompt, generation_prompt=True)──▶ token ids the model continues (generation)

A conversation is the sample's `messages` when it has them, else one user turn (instruction, then input
after a blank line when non-empty) and one assistant turn (output). Export, training and evaluation all
format through here, so a model is evaluated on exactly the conversation it was trained on. Nothing here
imports torch or transformers: the tokenizer is passed in.
"""

from __future__ import annotations

import json


def as_text(value) -> str:
    """A field as a string ('' for None)."""
    return "" if value is None else str(value)


def conversation(sample: dict, system_prompt: str | None = None) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, [(role, content), ...] alternating user/assistant) of a sample.

    The sample's own system message wins over `system_prompt`.

    Raises:
        ValueError: the sample's messages do not alternate user/assistant ending with the assistant.
    """
    messages = sample.get("messages")
    if not messages:
        user = as_text(sample.get("instruction"))
        if as_text(sample.get("input")).strip():
            user += "\n\n" + as_text(sample.get("input"))
        return system_prompt, [("user", user), ("assistant", as_text(sample.get("output")))]
    system = system_prompt
    turns = [(m.get("role"), as_text(m.get("content"))) for m in messages]
    if turns and turns[0][0] == "system":
        system, turns = turns[0][1], turns[1:]
    roles = [r for r, _ in turns]
    if len(turns) < 2 or len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise ValueError(f"sample {sample.get('sample_id')}: messages must alternate user/assistant and end "
                         f"with the assistant (got roles {roles}); curate drops such samples as bad_messages")
    return system, turns


def to_prompt_completion(row: dict) -> dict:
    """One DocTune row as a TRL conversational prompt-completion example.

    Single-turn rows: the user turn is the instruction, then a blank line and the input when there is one.
    Multi-turn rows (`messages`): the prompt is every turn but the last, the completion the last assistant
    turn. Loss is then computed on the completion only, whatever the chat template.
    """
    if isinstance(row.get("messages"), str):  # the store's JSON column, not yet decoded
        row = {**row, "messages": json.loads(row["messages"])}
    system, turns = conversation(row)
    prompt = [{"role": "system", "content": system}] if system is not None else []
    prompt += [{"role": role, "content": content} for role, content in turns[:-1]]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": turns[-1][1]}]}


def prompt_messages(row: dict) -> list[dict]:
    """A DocTune dataset row's chat prompt: every turn before the answer, exactly as training formats it."""
    return to_prompt_completion(row)["prompt"]


def render_ids(tokenizer, messages: list[dict], *, generation_prompt: bool) -> list[int]:
    """Token ids of `messages` through the tokenizer's chat template; `generation_prompt` opens the
    assistant's turn, so a model continues with its answer."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    # transformers 5 returns a BatchEncoding, earlier versions a list
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
