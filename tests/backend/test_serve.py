"""The server's plain logic, without Ray or HTTP: request checks, the key, and an answer's text as its tokens
arrive (the streamed pieces join to exactly the evaluation's decoding, cut before a stop string)."""

from __future__ import annotations

import pytest

from backend.serve import AnswerText, RequestError, authorized, key_digest, parse_request, with_system_prompt

MODELS = ["base", "train-a"]


def test_a_request_is_checked_field_by_field():
    ok = parse_request({"model": "train-a", "messages": [{"role": "user", "content": "hi"}], "stop": "\n\n",
                        "max_tokens": 7, "stream": True}, MODELS)
    assert (ok.model, ok.max_tokens, ok.stop, ok.stream, ok.temperature) == ("train-a", 7, ["\n\n"], True, 0.0)
    with pytest.raises(RequestError) as err:
        parse_request({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, MODELS)
    assert err.value.status == 404 and "available: base, train-a" in str(err.value)
    bad = [{"messages": []}, {"messages": [{"role": "tool", "content": "x"}]}, {"max_tokens": 0},
           {"max_tokens": "9"}, {"temperature": 3}, {"stop": ["a"] * 5}, {"stop": [""]}]
    for fields in bad:
        body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], **fields}
        with pytest.raises(RequestError) as err:
            parse_request(body, MODELS)
        assert err.value.status == 400, fields
    with pytest.raises(RequestError):
        parse_request(["not", "an", "object"], MODELS)


def test_a_served_system_prompt_goes_first_only_when_the_request_has_none():
    user = [{"role": "user", "content": "q"}]
    assert with_system_prompt(user, None) == user
    assert with_system_prompt(user, "S")[0] == {"role": "system", "content": "S"}
    own = [{"role": "system", "content": "mine"}] + user
    assert with_system_prompt(own, "S") == own


def test_the_key_is_checked_against_its_digest():
    digest = key_digest("k-1")
    assert authorized("Bearer k-1", digest) and authorized("bearer  k-1 ", digest)
    assert not authorized("Bearer k-2", digest) and not authorized(None, digest) and not authorized("k-1", digest)
    assert authorized(None, None)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from backend.tiny_model import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model(tmp_path_factory.mktemp("models")))


def streamed(tokenizer, ids: list[int], stop: list[str], max_tokens: int = 1000) -> tuple[list[str], AnswerText]:
    answer = AnswerText(tokenizer, {tokenizer.eos_token_id}, stop, max_tokens)
    pieces = [answer.add([t]) for t in ids]
    pieces.append(answer.finish())
    return [p for p in pieces if p], answer


def test_streamed_pieces_join_to_the_evaluations_text(tokenizer):
    from backend.generate import answer_text

    text = "  Call `tidemark.quote()` with a manifest.\n\nIt returns a Quote — für 3 t.  \n"
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] + tokenizer.encode("more")
    pieces, answer = streamed(tokenizer, ids, [])
    expected, n = answer_text(tokenizer, ids, {tokenizer.eos_token_id})
    assert "".join(pieces) == answer.text == expected and len(pieces) > 3
    assert answer.finish_reason == "stop" and len(answer.tokens) == n
    assert not pieces[-1].endswith((" ", "\n"))


def test_a_stop_string_cuts_the_answer_even_across_tokens(tokenizer):
    ids = tokenizer.encode("first part\n\nsecond part", add_special_tokens=False)
    pieces, answer = streamed(tokenizer, ids, ["\n\n"])
    assert "".join(pieces) == answer.text == "first part" and answer.finish_reason == "stop" and answer.done
    pieces, answer = streamed(tokenizer, ids, ["part\n\nsec"])
    assert "".join(pieces) == answer.text == "first "  # cut where the stop string starts, as OpenAI does
    limited, answer = streamed(tokenizer, ids, [], max_tokens=2)
    assert len(answer.tokens) == 2 and answer.finish_reason == "length"
    assert answer.text == tokenizer.decode(ids[:2], skip_special_tokens=True).strip()
