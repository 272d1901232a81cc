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


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (ChatML's `<|im_end|>` for Qwen,
    SmolLM2 and the tiny model), found by rendering one exchange: the first special token after the answer.
    None when the template closes turns with plain text only."""
    marker = "doctune-end-of-turn-probe"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}],
                                         tokenize=False)
    after = text[text.rindex(marker) + len(marker):]
    special = set(tokenizer.all_special_ids)
    return next((i for i in tokenizer(after, add_special_tokens=False)["input_ids"] if i in special), None)


def stop_token_ids(tokenizer, eos_token_id: int | list[int] | None = None) -> list[int]:
    """What ends a generated answer: the chat template's end of turn, the tokenizer's end of sequence, and
    `eos_token_id` (a generation config's, one id or several), sorted.

    Training teaches the end of turn (TRL adds no end-of-sequence token to conversations), and a base model's
    own generation config may stop only at end of text (Qwen2.5-3B's: `<|endoftext|>`), so without the end
    of turn generation runs on to `max_new_tokens`, inventing further turns.
    """
    ids = set(eos_token_id if isinstance(eos_token_id, list) else [] if eos_token_id is None else [eos_token_id])
    ids.update(i for i in (end_of_turn_id(tokenizer), tokenizer.eos_token_id) if i is not None)
    return sorted(ids)
