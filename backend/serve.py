"""Serving: one base model and its LoRA adapters behind an OpenAI-compatible API, on Ray Serve.

    POST /v1/chat/completions {model: a training run id | "base", messages, stream, temperature, max_tokens, stop}
        ──parse_request──▶ ChatRequest ──@serve.batch (many clients)──▶ ServedModel.generate: one
        `model.generate` per batch (mixed adapters through peft's `adapter_names`), token ids step by step
        ──AnswerText──▶ the answer (whole, or as server-sent events the `openai` client reads)
    GET /v1/models ──▶ the names served

What ships is what was evaluated: prompts are rendered by `backend.chat.render_ids`, and generated, stopped and
decoded with `backend.generate`'s settings, so a greedy served answer is the evaluation's answer; `replay` asks an
endpoint the evaluation's prompts for `backend.verify.compare`. torch, transformers, peft, FastAPI and Ray Serve
are imported inside functions: `parse_request`, `AnswerText` and the formatting are plain Python.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (`Request`, imported inside
# `build_app`) at definition time
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field

BASE = "base"  # the model name of the base itself; every other name is a training run's id
KEY_VARIABLE = "DOCTUNE_SERVE_KEY"
MAX_STOP = 4  # stop strings a request may give (OpenAI's limit)


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the message the client gets."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code = status, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.code, "code": self.status}}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    stream: bool = False
    max_tokens: int = 128
    temperature: float = 0.0  # greedy unless asked: the served answer is then the evaluated one
    stop: list[str] = field(default_factory=list)


def parse_request(body, models: list[str], default_max_tokens: int = 128, max_tokens_limit: int = 4096
                  ) -> ChatRequest:
    """A chat completion request checked against what is served.

    Raises:
        RequestError: 404 for a model not served (naming those that are), 400 for any other bad field.
    """
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    model = body.get("model")
    if model not in models:
        raise RequestError(404, f"model {model!r} is not served here; available: {', '.join(models)}",
                           "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in messages):
        raise RequestError(400, "messages must be a non-empty list of {role: system|user|assistant, "
                                "content: string}")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        raise RequestError(400, f"max_tokens must be an integer from 1 to {max_tokens_limit}")
    temperature = body.get("temperature")
    temperature = 0.0 if temperature is None else temperature
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise RequestError(400, "temperature must be a number from 0 to 2 (0: greedy)")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(400, f"stop must be a string or a list of up to {MAX_STOP} non-empty strings")
    return ChatRequest(model, [{"role": m["role"], "content": m["content"]} for m in messages],
                       bool(body.get("stream")), max_tokens, float(temperature), stop)


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The conversation the model sees: a served system prompt goes first when the request brings none."""
    if system_prompt is None or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}] + messages


# ---- the key -------------------------------------------------------------------------------------------

def key_digest(key: str) -> str:
    """What the server keeps of its key: a digest, so the key itself never leaves the command that read it."""
    return hashlib.sha256(key.encode()).hexdigest()


def authorized(header: str | None, digest: str | None) -> bool:
    """Whether an `Authorization` header carries the key (always, when the server has none)."""
    if digest is None:
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(key_digest(token.strip()), digest)


# ---- answers as they are generated ---------------------------------------------------------------------

class AnswerText:
    """One answer's text while its tokens arrive: `add` returns what can be sent now; once `done`, the sent
    pieces joined are `text`, which is `backend.generate.answer_text`'s (stripped), cut before a stop string.

    Held back until more arrives: trailing whitespace (the final text is stripped), an unfinished UTF-8
    character, and an ending that may begin a stop string.
    """

    def __init__(self, tokenizer, stop_ids: set[int], stop: list[str], max_tokens: int):
        self.tokenizer, self.stop_ids, self.stop, self.max_tokens = tokenizer, stop_ids, stop, max_tokens
        self.tokens: list[int] = []
        self.sent = ""
        self.done = False
        self.finish_reason = "length"

    def add(self, ids: list[int]) -> str:
        for t in ids:
            if self.done:
                break
            self.tokens.append(t)
            if t in self.stop_ids:
                self.done, self.finish_reason = True, "stop"
            elif len(self.tokens) >= self.max_tokens:
                self.done = True
        return self._delta()

    def finish(self) -> str:
        """The rest of the text (generation ended without a stop token: the batch's limit, or an error)."""
        self.done = True
        return self._delta()

    @property
    def text(self) -> str:
        return self.sent

    def _delta(self) -> str:
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).strip()
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            text, self.done, self.finish_reason = text[:min(cuts)], True, "stop"
        elif not self.done:
            text = text.rstrip().rstrip("\ufffd")
            held = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[:len(text) - held]
        if not text.startswith(self.sent):  # a decode that rewrote what was sent: send nothing more until it fits
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


def completion_body(request_id: str, model: str, answer: AnswerText, prompt_tokens: int) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.tokens),
                      "total_tokens": prompt_tokens + len(answer.tokens)}}


def chunk_event(request_id: str, model: str, delta: dict, finish_reason: str | None = None) -> str:
    """One server-sent event of a streamed completion, as the `openai` client parses it."""
    chunk = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
    return f"data: {json.dumps(chunk)}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# ---- the model -----------------------------------------------------------------------------------------

@dataclass
class Job:
    """One request inside a batch: whose adapter, the prompt's token ids, its limits."""

    model: str
    ids: list[int]
    max_tokens: int
    temperature: float = 0.0


class ServedModel:
    """One base model in memory with every served adapter attached by name; batched generation.

    Loaded as `backend.generate.load_for_eval` loads it for evaluation (same dtype, same 4-bit base), so the
    served model is the evaluated one; a batch whose requests all ask the same model generates exactly as
    evaluation does (the adapter set active, or disabled for the base); a batch mixing models passes peft
    `adapter_names`, one per row.
    """

    def __init__(self, base_path: str, adapters: dict[str, str], device: str | None = None,
                 system_prompt: str | None = None):
        import torch

        from backend.generate import load_for_eval, prepare_tokenizer, stop_ids

        self.system_prompt = system_prompt
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        names = list(adapters)
        # peft names the first adapter "default"; the others get their run id
        self.peft_names = {name: ("default" if i == 0 else name) for i, name in enumerate(names)}
        if names:
            self.model, self.tokenizer = load_for_eval(adapters[names[0]], base_model_path=base_path, device=device)
            for name in names[1:]:
                self.model.load_adapter(adapters[name], adapter_name=self.peft_names[name])
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from backend.device import cuda_bf16_supported

            dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if cuda_bf16_supported() else torch.float16)
            self.model = AutoModelForCausalLM.from_pretrained(base_path, local_files_only=True, dtype=dtype)
            self.model = self.model.to(device).eval()
            self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base_path, local_files_only=True))
        self.stop_ids = stop_ids(self.model, self.tokenizer)
        self.models = [BASE] + names

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        from backend.chat import render_ids

        return render_ids(self.tokenizer, with_system_prompt(messages, self.system_prompt), generation_prompt=True)

    def answer(self, request: ChatRequest) -> AnswerText:
        return AnswerText(self.tokenizer, self.stop_ids, request.stop, request.max_tokens)

    def generate(self, jobs: list[Job], on_step) -> None:
        """Generate for every job; `on_step(list of (job index, [token id]))` after each decoding step.

        Jobs are grouped by temperature (one `generate` call each: greedy and sampled cannot share one), then
        each group is one left-padded batch, as evaluation's.
        """
        groups: dict[float, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.temperature, []).append(i)
        for temperature, members in groups.items():
            self._generate_group([jobs[i] for i in members], temperature,
                                 lambda rows, members=members: on_step(
                                     [(members[k], [t]) for k, t in enumerate(rows)]))

    def _generate_group(self, jobs: list[Job], temperature: float, on_row_tokens) -> None:
        import contextlib

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        from backend.generate import generation_kwargs

        class Steps(BaseStreamer):
            """Each decoding step's tokens, one per row (the first `put` is the prompt)."""

            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                on_row_tokens(value.view(-1).tolist())

            def end(self):
                pass

        class RowLimits(StoppingCriteria):
            """Each row ends at its own max_tokens (the batch runs to the largest)."""

            def __init__(self, start: int, limits: list[int]):
                self.start, self.limits = start, limits

            def __call__(self, input_ids, scores, **kwargs):
                n = input_ids.shape[1] - self.start
                return torch.tensor([n >= m for m in self.limits], device=input_ids.device)

        padded = self.tokenizer.pad({"input_ids": [j.ids for j in jobs]}, padding=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        kwargs = generation_kwargs(self.tokenizer, max(j.max_tokens for j in jobs), greedy=temperature == 0,
                                   stop=self.stop_ids)
        if temperature:
            kwargs["temperature"] = temperature
        kwargs["stopping_criteria"] = StoppingCriteriaList([RowLimits(input_ids.shape[1],
                                                                      [j.max_tokens for j in jobs])])
        models = {j.model for j in jobs}
        context = contextlib.nullcontext()
        if len(models) == 1 and hasattr(self.model, "disable_adapter"):  # evaluation's own path
            (only,) = models
            if only == BASE:
                context = self.model.disable_adapter()
            else:
                self.model.set_adapter(self.peft_names[only])
        elif len(models) > 1:
            kwargs["adapter_names"] = ["__base__" if j.model == BASE else self.peft_names[j.model] for j in jobs]
        with torch.inference_mode(), context:
            self.model.generate(input_ids=input_ids, attention_mask=mask, streamer=Steps(), **kwargs)


# ---- the Ray Serve application -------------------------------------------------------------------------

def build_app(base_path: str, adapters: dict[str, str], *, digest: str | None = None, max_batch_size: int = 8,
              batch_wait_s: float = 0.02, default_max_tokens: int = 128, system_prompt: str | None = None,
              ray_actor_options: dict | None = None):
    """The Serve application: FastAPI routes in front of one replica of `ServedModel`.

    Args:
        base_path: the base model's folder.
        adapters: model name (training run id) → adapter folder.
        digest: `key_digest` of the key every request must bring as `Authorization: Bearer KEY` (None: no key).
        max_batch_size, batch_wait_s: Serve's batching: up to this many requests, waiting at most this long.
        system_prompt: a system prompt put before conversations that have none (tests use it to serve a template
            other than the evaluated one).
        ray_actor_options: the replica's resources (the caller's: `num_gpus=1` where the cluster has a GPU).
    """
    import asyncio
    import threading

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from ray import serve

    api = FastAPI(title="DocTune")

    @serve.deployment(ray_actor_options=ray_actor_options or {"num_cpus": 1}, max_ongoing_requests=64)
    @serve.ingress(api)
    class DocTuneServer:
        def __init__(self):
            from backend.train import use_all_cores

            use_all_cores()
            self.served = ServedModel(base_path, adapters, system_prompt=system_prompt)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def _steps(self, jobs: list[Job]):
            """Per decoding step, each job's new tokens ([] while its group waits); StopIteration once it ended."""
            loop, queue = asyncio.get_running_loop(), asyncio.Queue()

            def work():
                try:
                    self.served.generate(jobs, lambda step: loop.call_soon_threadsafe(queue.put_nowait, step))
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                except Exception as exc:  # raised to every request of the batch
                    loop.call_soon_threadsafe(queue.put_nowait, exc)

            threading.Thread(target=work, daemon=True).start()
            while (step := await queue.get()) is not None:
                if isinstance(step, Exception):
                    raise step
                out: list = [[] for _ in jobs]
                for i, tokens in step:
                    out[i] = tokens
                yield out

        def _check(self, request: Request, body) -> ChatRequest:
            if not authorized(request.headers.get("authorization"), digest):
                raise RequestError(401, "missing or wrong key: send Authorization: Bearer <the server's "
                                        f"{KEY_VARIABLE}>", "authentication_error")
            return parse_request(body, self.served.models, default_max_tokens)

        @api.get("/v1/models")
        def list_models(self, request: Request):
            if not authorized(request.headers.get("authorization"), digest):
                return JSONResponse(RequestError(401, "missing or wrong key", "authentication_error").body(), 401)
            return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "doctune"}
                                               for name in self.served.models]}

        @api.post("/v1/chat/completions")
        async def chat(self, request: Request):
            try:
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                chat = self._check(request, body)
            except RequestError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)
            ids = self.served.prompt_ids(chat.messages)
            answer = self.served.answer(chat)
            job = Job(chat.model, ids, chat.max_tokens, chat.temperature)
            request_id = new_request_id()
            if not chat.stream:
                async for tokens in self._steps(job):
                    answer.add(tokens)
                answer.finish()
                return completion_body(request_id, chat.model, answer, len(ids))

            async def events():
                yield chunk_event(request_id, chat.model, {"role": "assistant", "content": ""})
                async for tokens in self._steps(job):
                    delta = answer.add(tokens)
                    if delta:
                        yield chunk_event(request_id, chat.model, {"content": delta})
                delta = answer.finish()
                if delta:
                    yield chunk_event(request_id, chat.model, {"content": delta})
                yield chunk_event(request_id, chat.model, {}, answer.finish_reason)
                yield DONE_EVENT

            return StreamingResponse(events(), media_type="text/event-stream")

    return DocTuneServer.bind()


# ---- replaying an evaluation through an endpoint -------------------------------------------------------

def replay(url: str, model: str, rows: list[dict], *, key: str | None = None, max_tokens: int = 128,
           timeout_s: float = 600) -> list[str]:
    """The endpoint's greedy answers to evaluation rows' prompts (`prompt`: the messages), one request at a
    time (a batch of one: no padding, so each answer depends on its prompt alone), in the rows' order.

    Args:
        url: the endpoint's base URL (`http://127.0.0.1:8000/v1`).
        model: the served name to ask (a training run id, or "base").
        key: the server's key, when it has one.
        max_tokens: the evaluation's `max_new_tokens`.
    """
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=key or "none", timeout=timeout_s, max_retries=0)
    answers = []
    for row in rows:
        reply = client.chat.completions.create(model=model, messages=row["prompt"], temperature=0,
                                               max_tokens=max_tokens)
        answers.append(reply.choices[0].message.content or "")
    return answers
