"""Chat formatting: samples → conversation turns → prompt/completion → token ids, one path for every stage."""

from __future__ import annotations

import json

import pytest

from backend.chat import as_text, conversation, prompt_messages, render_ids, to_prompt_completion

MULTI = [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "A."},
         {"role": "user", "content": "b?"}, {"role": "assistant", "content": "B."}]


def test_single_turn_sample_is_one_exchange():
    sample = {"instruction": "Explain quote()", "input": "quote(3)", "output": "It prices."}
    assert conversation(sample) == (None, [("user", "Explain quote()\n\nquote(3)"), ("assistant", "It prices.")])
    # a blank input adds no blank line; a missing field is empty text
    assert conversation({**sample, "input": "  \n"})[1][0] == ("user", "Explain quote()")
    assert conversation({"instruction": "q"}) == (None, [("user", "q"), ("assistant", "")])


def test_system_prompt_is_a_default_the_sample_overrides():
    assert conversation({"messages": MULTI}, "Default.")[0] == "Default."
    own = [{"role": "system", "content": "Own."}] + MULTI
    system, turns = conversation({"messages": own}, "Default.")
    assert system == "Own."
    assert turns == [("user", "a?"), ("assistant", "A."), ("user", "b?"), ("assistant", "B.")]


@pytest.mark.parametrize("messages", [
    MULTI[:3],  # ends with the user
    MULTI[:1],  # no answer
    [MULTI[0], MULTI[0]],  # two users in a row
    [MULTI[1], MULTI[0]],  # assistant first
])
def test_conversations_that_do_not_alternate_are_refused(messages):
    with pytest.raises(ValueError, match="alternate user/assistant"):
        conversation({"sample_id": "s1", "messages": messages})


def test_prompt_completion_splits_off_the_last_answer():
    example = to_prompt_completion({"messages": [{"role": "system", "content": "S."}] + MULTI})
    assert example == {"prompt": [{"role": "system", "content": "S."}] + MULTI[:3],
                       "completion": [{"role": "assistant", "content": "B."}]}
    # the store keeps messages as a JSON string
    assert to_prompt_completion({"messages": json.dumps(MULTI)})["prompt"] == MULTI[:3]
    assert prompt_messages({"instruction": "q", "input": "", "output": "a", "messages": None}) == [
        {"role": "user", "content": "q"}]


def test_as_text():
    assert (as_text(None), as_text(3), as_text("x")) == ("", "3", "x")


class FakeTokenizer:
    """Renders each turn as one id per character of `role:content`; the generation prompt adds id 0."""

    def __init__(self, batch_encoding: bool):
        self.batch_encoding = batch_encoding

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
        assert tokenize
        ids = [ord(c) for m in messages for c in f"{m['role']}:{m['content']}"] + ([0] if add_generation_prompt else [])
        return {"input_ids": ids, "attention_mask": [1] * len(ids)} if self.batch_encoding else ids


@pytest.mark.parametrize("batch_encoding", [True, False])
def test_render_ids_with_and_without_generation_prompt(batch_encoding):
    tokenizer = FakeTokenizer(batch_encoding)
    prompt = [{"role": "user", "content": "hi"}]
    assert render_ids(tokenizer, prompt, generation_prompt=False) == [ord(c) for c in "user:hi"]
    assert render_ids(tokenizer, prompt, generation_prompt=True) == [ord(c) for c in "user:hi"] + [0]
