"""backend/verify.py: replayed answers against the stored evaluation outputs."""

import pytest

from backend.verify import compare, first_difference


def _row(sample_id, output, question="How is the cache flushed?"):
    return {"sample_id": sample_id, "eval_set": "test", "tuned_output": output, "base_output": "base says",
            "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": question}]}


def test_identical_answers_pass():
    rows = [_row("a", "Call flush()."), _row("b", "")]
    assert compare(rows, ["Call flush().", ""]) == {"passed": True, "checked": 2, "identical": 2, "differences": []}
    assert compare(rows[:1], ["base says"], side="base")["passed"]


def test_first_difference_names_the_prompt_and_the_offset():
    rows = [_row("a", "Call flush() after write."), _row("b", "same", question="Second question")]
    result = compare(rows, ["Call flush() after write.", "sample"])
    assert not result["passed"] and result["identical"] == 1
    (diff,) = result["differences"]
    assert diff["sample_id"] == "b" and diff["prompt"] == "Second question"
    assert diff["offset"] == 3 and diff["expected"] == "same" and diff["got"] == "sample"


def test_a_prefix_differs_where_the_shorter_text_ends():
    assert first_difference("abc", "abc") is None
    assert first_difference("abc", "abc<|im_start|>user")["offset"] == 3
    long = "x" * 100
    diff = first_difference(long + "A" + long, long + "B" + long)
    assert diff["offset"] == 100 and len(diff["expected"]) == 80 and diff["expected"][40] == "A"


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="2 evaluation rows"):
        compare([_row("a", "x"), _row("b", "y")], ["x"])
    with pytest.raises(ValueError, match="side"):
        compare([_row("a", "x")], ["x"], side="both")
