"""A real, loopback-only, OpenAI-compatible chat-completions server for tests and benchmarks.

Standard library only. Start it in-process::

    with FakeLLMServer(latency_s=0.01, rpm=600, faults=Faults(p_500=0.1)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="k")
        ...

or standalone for a manual demo::

    python tests/fake_llm.py --port 0 --latency 0.05 --rpm 600

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The answer *content* is a pure function of the request's ``messages`` (see :func:`content_for`), never of
timing, attempt number or the fault RNG, so a re-sent request gets the identical content. Prompt contract
(read from the last ``user`` message; the system message may say anything):

* ``TASK: qa|codegen|explain|completion|multiturn|facts|probe`` + ``COUNT: n`` + the source between a line ``<<<CHUNK``
  and a line ``CHUNK>>>`` -> ``{"samples": [{"instruction", "input", "output"(, "messages")(, "fact")}, ...]}``
* ``TASK: judge`` + ``<<<SAMPLE`` ... ``SAMPLE>>>`` -> ``{"score": 1..10, "reason"}``; text containing the
  word ``BADSAMPLE`` scores 2, every other text scores 4..10 (from a hash of the text).
* ``TASK: pairwise`` + ``<<<A`` ... ``A>>>`` + ``<<<B`` ... ``B>>>`` -> ``{"winner": "A"|"B"|"tie", "reason"}``:
  the longer text wins when the lengths differ by more than 10 % of the longer one, else ``tie``.
* anything else -> ``{"samples": []}``.

Order of checks per chat request: body read in full (always, so keep-alive stays in sync) -> auth (401)
-> JSON validation (400; ``stream: true`` too when the server was made with ``stream=False``) -> sliding-window
rate limit (429 ``rate_limited_429``) -> one draw from the seeded fault RNG (500 / 429 / hang / malformed / think
/ stall, mutually exclusive, in that order of the cumulative probabilities) -> ``latency_s`` -> answer.

``stream: true`` is answered as server-sent events (chunked): the content in a few ``chat.completion.chunk`` deltas,
a last chunk with ``finish_reason``, then, when ``stream_options.include_usage`` is set and the server was made
with ``stream_usage=True``, a chunk with no choices and the ``usage``; then ``data: [DONE]``. A ``stall`` fault
sends the first chunk and then nothing for ``hang_s``.

Bounds: loopback only; request bodies <= ``MAX_BODY_BYTES`` (else 413 and close); at most
``MAX_CONNECTIONS`` concurrent connections (else 503 and close); idle keep-alive connections are closed
after ``IDLE_TIMEOUT_S``; ``COUNT`` is clamped to ``MAX_COUNT``; ``request_log`` keeps the last
``MAX_LOG`` entries; every sleep (latency, hang) wakes at ``stop()``, which also shuts every open
connection down and joins the handler threads (all threads are daemons anyway).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import http.server
import json
import keyword
import random
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["Faults", "FakeLLMServer", "content_for", "parse_prompt", "SAMPLE_TASKS"]

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CONNECTIONS = 512
IDLE_TIMEOUT_S = 30.0
MAX_COUNT = 100
MAX_LOG = 50_000
SAMPLE_TASKS = ("qa", "codegen", "explain", "completion", "multiturn", "facts", "probe")
STOP_JOIN_S = 2.0

_QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


# --------------------------------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Per-request fault probabilities (mutually exclusive; their sum must be <= 1)."""

    p_500: float = 0.0  # answer 500 with a JSON error body
    p_429: float = 0.0  # answer 429 with header Retry-After: <retry_after_s> (random, not rate-based)
    p_timeout: float = 0.0  # sleep hang_s before answering, then answer normally if still connected
    p_malformed: float = 0.0  # 200, but the content is broken JSON that cannot be repaired into the answer
    p_think: float = 0.0  # 200, content is "<think>...</think>\n```json\n...\n```"
    p_stall: float = 0.0  # streamed: the first chunk, then hang_s of silence (not streamed: like p_timeout)
    retry_after_s: float = 1.0
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        ps = (self.p_500, self.p_429, self.p_timeout, self.p_malformed, self.p_think, self.p_stall)
        if any(not (0.0 <= float(p) <= 1.0) for p in ps):
            raise ValueError(f"fault probabilities must be within [0, 1]: {ps}")
        if sum(ps) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities are exclusive; their sum must be <= 1, got {sum(ps)}")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must be >= 0")

    def pick(self, r: float) -> str | None:
        """Map one uniform draw in [0, 1) to a fault name (or None)."""
        acc = 0.0
        for name, p in (
            ("500", self.p_500),
            ("429", self.p_429),
            ("timeout", self.p_timeout),
            ("malformed", self.p_malformed),
            ("think", self.p_think),
            ("stall", self.p_stall),
        ):
            acc += p
            if r < acc:
                return name
        return None


# ------------------------------------------------------------------------------- deterministic content


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text_of(content: Any) -> str:
    """A message's text: a plain string, or the text parts of a list-of-parts content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    return ""


def _user_text(messages: Any) -> str:
    """The text of the last user message ('' if none)."""
    if not isinstance(messages, list):
        return ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _block(text: str, name: str) -> str | None:
    """Text between a line ``<<<NAME`` and the last line ``NAME>>>`` after it (None if absent)."""
    m = re.search(rf"^[ \t]*<<<{name}[ \t]*\r?$\n?", text, re.M)
    if not m:
        return None
    ends = list(re.finditer(rf"^[ \t]*{name}>>>[ \t]*\r?$", text[m.end():], re.M))
    if not ends:
        return None
    return text[m.end(): m.end() + ends[-1].start()].rstrip("\r\n")


def _pair(text: str) -> tuple[str, str] | None:
    m = re.search(
        r"^[ \t]*<<<A[ \t]*\r?\n(.*?)\r?\n?^[ \t]*A>>>[ \t]*\r?$"
        r".*?^[ \t]*<<<B[ \t]*\r?\n(.*?)\r?\n?^[ \t]*B>>>[ \t]*\r?$",
        text,
        re.S | re.M,
    )
    return (m.group(1), m.group(2)) if m else None


def parse_prompt(messages: Any) -> dict:
    """What the server reads from a request: {"kind", "task", "count", "chunk"/"sample"/"a","b"}.

    kind is "samples" (sample generation and anything unrecognised), "judge" or "pairwise".
    """
    text = _user_text(messages)
    tm = re.search(r"^[ \t]*TASK:[ \t]*(\S+)[ \t]*\r?$", text, re.M)
    task = tm.group(1).strip().lower() if tm else None
    if task == "judge":
        sample = _block(text, "SAMPLE")
        if sample is not None:
            return {"kind": "judge", "task": task, "sample": sample}
    elif task == "pairwise":
        ab = _pair(text)
        if ab is not None:
            return {"kind": "pairwise", "task": task, "a": ab[0], "b": ab[1]}
    elif task in SAMPLE_TASKS:
        cm = re.search(r"^[ \t]*COUNT:[ \t]*(\d+)[ \t]*\r?$", text, re.M)
        chunk = _block(text, "CHUNK")
        if cm and chunk is not None:
            count = min(int(cm.group(1)[:6]), MAX_COUNT)
            return {"kind": "samples", "task": task, "count": count, "chunk": chunk}
    return {"kind": "samples", "task": None, "count": 0, "chunk": None}


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOP = frozenset(
    "the and for with that this from into your you are was were will can not have has its our their "
    "which when where what there then than them they these those been being also only more most such "
    "about using used use each other some any all one two how why who".split()
)


def _clean(s: str, limit: int = 80) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _topic(chunk: str) -> str:
    """A distinctive phrase: first heading, else first rst title, else first def/class, else first line."""
    lines = chunk.splitlines()
    in_fence = False
    for line in lines:
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m and not in_fence:
            return _clean(m.group(1))
    for a, b in zip(lines, lines[1:]):
        if a.strip() and re.fullmatch(r"\s*([=\-~^\"'`#*+])\1{2,}\s*", b) and len(b.strip()) >= len(a.strip()):
            return _clean(a)
    m = re.search(r"\b(?:def|class)\s+([A-Za-z_]\w*)", chunk)
    if m:
        return m.group(1)
    for line in lines:
        if line.strip() and not line.lstrip().startswith("```"):
            return _clean(" ".join(line.split()[:8]))
    return "the document"


def _identifier(chunk: str) -> str:
    """A Python name found in the chunk (sanitised), used by the generated code."""
    m = re.search(r"\b(?:def|class)\s+([A-Za-z_]\w*)", chunk)
    name = m.group(1) if m else None
    if name is None:
        for bm in re.finditer(r"`([A-Za-z_][\w.]*)(?:\(\))?`", chunk):
            name = bm.group(1).split(".")[-1]
            break
    if name is None:
        for wm in _IDENT.finditer(chunk):
            w = wm.group(0)
            if len(w) >= 4 and w.lower() not in _STOP:
                name = w
                break
    name = re.sub(r"\W", "_", name or "value")
    if not name or name[0].isdigit():
        name = "v_" + name
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        name += "_"
    return name[:60]


def _sentences(chunk: str) -> list[str]:
    adorn = re.compile(r"\s*([=\-~^\"'`#*+])\1{2,}\s*")
    prose = []
    in_fence = False
    lines = chunk.splitlines()
    for n, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or adorn.fullmatch(line):
            continue
        if re.match(r"^\s{0,3}#{1,6}\s+", line) or (n + 1 < len(lines) and adorn.fullmatch(lines[n + 1])):
            continue  # headings and rst titles are the topic, not sentences
        prose.append(line)
    flat = re.sub(r"\s+", " ", " ".join(prose)).strip()
    sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", flat) if len(s.split()) >= 3]
    if not sents:
        words = chunk.split()
        sents = [" ".join(words[i: i + 20]) for i in range(0, len(words), 20)]
    return [_clean(s, 300) for s in sents] or ["(The source text is empty.)"]


def _keywords(chunk: str) -> list[str]:
    seen: dict[str, None] = {}
    for wm in re.finditer(r"[A-Za-z_][A-Za-z0-9_]{4,}", chunk):
        w = wm.group(0)
        if w.lower() not in _STOP:
            seen.setdefault(w, None)
    return list(seen) or ["it"]


def _code(ident: str, topic: str, i: int) -> str:
    doc = repr(f"Example {i} for {topic}: calls {ident}.")
    return (
        f"def use_{ident}_{i}(*args, **kwargs):\n"
        f"    {doc}\n"
        f"    result = {ident}(*args, **kwargs)\n"
        f"    return result\n"
    )


def _samples(task: str, count: int, chunk: str) -> list[dict]:
    topic = _topic(chunk)
    ident = _identifier(chunk)
    sents = _sentences(chunk)
    kws = _keywords(chunk)
    k = len(sents)
    out = []
    for idx in range(count):
        i = idx + 1
        quote = sents[idx % k] if k == 1 else f"{sents[idx % k]} {sents[(idx + 1) % k]}"
        kw = kws[idx % len(kws)]
        if task == "facts":
            item = {
                "instruction": f"Fact {i} of '{topic}': what does it say about `{kw}`?",
                "input": "",
                "output": f"`{kw}`: {sents[idx % k]}",
            }
        elif task == "probe":
            item = {
                "instruction": f"Quick check {i} on '{topic}': which name goes with this? {sents[idx % k]}",
                "input": "",
                "output": f"The name is `{kw}`.",
                "fact": kw,
            }
        elif task == "qa":
            item = {
                "instruction": f"Question {i} about '{topic}': what does the documentation say about {kw}?",
                "input": "",
                "output": quote,
            }
        elif task == "explain":
            item = {
                "instruction": f"Explain point {i} of '{topic}' in your own words.",
                "input": sents[idx % k],
                "output": f"In short: {quote}",
            }
        elif task == "codegen":
            item = {
                "instruction": f"Write a Python function for '{topic}' that uses `{ident}` (variant {i}).",
                "input": "",
                "output": f"{sents[idx % k]}\n\n```python\n{_code(ident, topic, i)}```",
            }
        elif task == "completion":
            code = _code(ident, topic, i)
            head = "\n".join(code.splitlines()[:2]) + "\n"
            item = {
                "instruction": f"Complete this code from '{topic}' (part {i}).",
                "input": f"```python\n{head}```",
                "output": f"```python\n{code}```\n{sents[idx % k]}",
            }
        else:  # multiturn
            second = sents[(idx + 1) % k]
            q1 = f"Conversation {i}: what is '{topic}' about?"
            q2 = f"And what about {kw}?"
            item = {
                "instruction": q1,
                "input": "",
                "output": sents[idx % k],
                "messages": [
                    {"role": "user", "content": q1},
                    {"role": "assistant", "content": sents[idx % k]},
                    {"role": "user", "content": q2},
                    {"role": "assistant", "content": second},
                ],
            }
        out.append(item)
    return out


def _answer_obj(parsed: dict) -> dict:
    kind = parsed["kind"]
    if kind == "judge":
        sample = parsed["sample"]
        if re.search(r"\bBADSAMPLE\b", sample):
            return {"score": 2, "reason": "The sample is marked BADSAMPLE: it is wrong and unhelpful."}
        score = 4 + int(_sha(sample)[:8], 16) % 7
        return {"score": score, "reason": f"Deterministic review of a {len(sample)}-character sample: {score}/10."}
    if kind == "pairwise":
        a, b = parsed["a"].strip(), parsed["b"].strip()
        la, lb = len(a), len(b)
        longer = max(la, lb)
        if longer and abs(la - lb) > 0.10 * longer:
            winner = "A" if la > lb else "B"
            reason = f"Answer {winner} is more complete ({max(la, lb)} vs {min(la, lb)} characters)."
        else:
            winner = "tie"
            reason = f"Both answers are about as complete ({la} and {lb} characters)."
        return {"winner": winner, "reason": reason}
    if parsed["task"] is None:
        return {"samples": []}
    return {"samples": _samples(parsed["task"], parsed["count"], parsed["chunk"])}


def content_for(messages: Any) -> str:
    """The normal (fault-free) answer content for these messages: a JSON string."""
    return json.dumps(_answer_obj(parse_prompt(messages)), ensure_ascii=False)


def _malformed(parsed: dict, good: str, messages_sha: str) -> str:
    """Broken JSON: always cut before the first required field is complete, so no repair can restore it."""
    variant = int(messages_sha[:8], 16) % 3
    obj = json.loads(good)
    kind = parsed["kind"]
    if kind == "judge":
        heads = ['{"score": ', "{score: ", '{"score": ,, "reason": ']
    elif kind == "pairwise":
        heads = ['{"winner": "', "{winner: ", '{"winner": ,, "reason": "']
    elif obj["samples"]:
        instr = obj["samples"][0]["instruction"]
        part = instr[: max(1, len(instr) // 2)]
        heads = [
            '{"samples": [{"instruction": "' + part,
            "{samples: [{instruction: " + part,
            '{"samples": [{"instruction": "' + part + '",, "input": ,',
        ]
    else:
        heads = ['{"samples": [{"instr', "{samples: [{instruction: ", '{"samples": [,, {"input": ']
    return heads[variant]


def _think(parsed: dict, good: str) -> str:
    what = {"judge": "score this sample", "pairwise": "compare two answers"}.get(parsed["kind"], "write samples")
    return (
        f"<think>\nThe user wants me to {what}. I will answer with JSON only.\n</think>\n"
        f"```json\n{good}\n```"
    )


def _tokens(text: str) -> int:
    return int(round(len(text.split()) * 1.3))


# ---------------------------------------------------------------------------------------- HTTP server


class _HTTPServer(http.server.HTTPServer):
    """An HTTPServer with its own bounded, tracked, daemon connection threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, app: "FakeLLMServer", port: int):
        self.app = app
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        super().__init__((LOOPBACK, port), _Handler)

    def server_bind(self) -> None:
        # plain socket bind; HTTPServer.server_bind would call getfqdn(), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def verify_request(self, request, client_address) -> bool:
        return client_address[0] in ("127.0.0.1", "::1", "::ffff:127.0.0.1")

    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            busy = len(self._conns) >= MAX_CONNECTIONS
            if not busy:
                self._conns.add(request)
                t = threading.Thread(
                    target=self._serve_connection, args=(request, client_address), daemon=True, name="fake-llm-conn"
                )
                self._threads.add(t)
        if busy:
            body = b'{"error":{"message":"too many connections","type":"server_error","code":"busy"}}'
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            self.app._count("http_503")
            return
        self.app._count("connections")
        t.start()

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.discard(request)
                self._threads.discard(threading.current_thread())

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS) or (isinstance(exc, OSError) and self.app._stopping.is_set()):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> list[threading.Thread]:
        with self._conn_lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return threads


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True
    server: _HTTPServer

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.app.log_requests:
            sys.stderr.write("fake-llm %s - %s\n" % (self.address_string(), format % args))

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None, close: bool = False) -> bool:
        """Send one JSON response (always with Content-Length) in a single write; False if the client is gone."""
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(body)
            self.flush_headers()  # headers + body leave in one write (no Nagle/delayed-ACK stall)
            return True
        except (OSError, ValueError):
            self.close_connection = True
            return False

    def _error(self, status: int, message: str, etype: str, code: str | None = None, **kw: Any) -> bool:
        return self._send(status, {"error": {"message": message, "type": etype, "param": None, "code": code}}, **kw)

    def _read_body(self) -> bytes | None:
        """The whole request body (Content-Length or chunked), or None after answering 4xx and closing."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = bytearray()
            while True:
                line = self.rfile.readline(1026)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    self._error(400, "bad chunked encoding", "invalid_request_error", close=True)
                    return None
                if size == 0:
                    while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                if len(data) + size > MAX_BODY_BYTES:
                    self._error(413, "request body too large", "invalid_request_error", close=True)
                    return None
                data += self.rfile.read(size)
                self.rfile.readline(3)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self._error(400, "bad Content-Length", "invalid_request_error", close=True)
            return None
        if length > MAX_BODY_BYTES:
            self._error(413, "request body too large", "invalid_request_error", close=True)
            return None
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            return None
        return data

    def _client_alive(self) -> bool:
        """False once the peer has closed (EOF) or reset the connection."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return True
            return self.connection.recv(1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):
            return False

    def _authorized(self) -> bool:
        key = self.server.app.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    # ---- routes

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            if not self._authorized():
                self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                return
            self._send(200, {"object": "list", "data": [{"id": self.server.app.model, "object": "model",
                                                          "created": 0, "owned_by": "fake-llm"}]})
            return
        self._error(404, f"no route for GET {path}", "invalid_request_error", "not_found")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route for POST {path}", "invalid_request_error", "not_found")
            return
        self.server.app._chat(self, body)

    def do_PUT(self) -> None:
        if self._read_body() is not None:
            self._error(405, "method not allowed", "invalid_request_error")

    do_DELETE = do_PATCH = do_PUT


class FakeLLMServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, run in a background daemon thread."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        rpm: int | None = None,
        window_s: float = 60.0,
        faults: Faults | None = None,
        seed: int = 0,
        api_key: str | None = None,
        model: str = "fake-model",
        port: int = 0,
        stream: bool = True,
        stream_usage: bool = True,
    ):
        if latency_s < 0 or window_s <= 0 or (rpm is not None and rpm <= 0):
            raise ValueError("latency_s must be >= 0, window_s > 0 and rpm > 0 (or None)")
        self.latency_s = float(latency_s)
        self.rpm = rpm
        self.window_s = float(window_s)
        self.api_key = api_key
        self.model = model
        self.seed = seed
        self.stream = stream  # False: refuse ``stream: true`` with a 400, as some endpoints do
        self.stream_usage = stream_usage  # False: ignore ``stream_options.include_usage``
        self.log_requests = False
        self.port: int = port
        self.base_url: str = ""
        self._lock = threading.Lock()
        self._faults = dataclasses.replace(faults) if faults else Faults()
        self._rng = random.Random(seed)
        self._window: collections.deque[float] = collections.deque()
        self._stats = self._zero_stats()
        self._log: list[dict] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None

    # ---- lifecycle

    @property
    def capacity(self) -> int | None:
        """Requests admitted per sliding window (None: unlimited)."""
        if self.rpm is None:
            return None
        return max(1, int(self.rpm * self.window_s / 60.0 + 1e-9))

    def start(self) -> "FakeLLMServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(self, self.port)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.base_url = f"http://{LOOPBACK}:{self.port}/v1"
        self._serve_thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"fake-llm-serve-{self.port}"
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake every sleeping handler, shut all connections down, join threads (bounded)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self._serve_thread is not None and self._serve_thread.is_alive():
            httpd.shutdown()
        httpd.server_close()
        threads = httpd.close_connections()
        deadline = time.monotonic() + STOP_JOIN_S
        for t in threads + [self._serve_thread]:
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        self._serve_thread = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeLLMServer(base_url={self.base_url!r}, running={self._httpd is not None})"

    # ---- control and inspection

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = dataclasses.replace(faults)

    @property
    def faults(self) -> Faults:
        with self._lock:
            return dataclasses.replace(self._faults)

    @staticmethod
    def _zero_stats() -> dict:
        keys = ("requests ok http_429 rate_limited_429 fault_429 http_500 timeouts malformed think stall streamed "
                "judge pairwise http_400 http_401 http_503 connections")
        return dict.fromkeys(keys.split(), 0)

    def stats(self) -> dict:
        """Counters (updated before the response is written). requests: chat POSTs received; ok: 200 answers
        (normal, think, malformed, a hang's late answer);
        http_429 = rate_limited_429 + fault_429; timeouts: injected hangs; judge: judge + pairwise prompts
        (pairwise also counted alone); connections: TCP connections accepted; http_503: connections refused
        over MAX_CONNECTIONS."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Zero the counters and clear request_log (the rate window and RNG are kept)."""
        with self._lock:
            self._stats = self._zero_stats()
            self._log = []

    @property
    def request_log(self) -> list[dict]:
        """A snapshot, oldest first: {"t", "status", "kind", "authorization", "body_sha", "fault"}.
        status 499: an injected hang whose client had gone, so nothing was sent."""
        with self._lock:
            return list(self._log)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    # ---- the chat endpoint

    def _admit(self, now: float) -> float | None:
        """Sliding-window rate limit: None if admitted, else seconds until a slot frees up."""
        cap = self.capacity
        if cap is None:
            return None
        with self._lock:
            while self._window and self._window[0] <= now - self.window_s:
                self._window.popleft()
            if len(self._window) >= cap:
                return max(0.05, self._window[0] + self.window_s - now)
            self._window.append(now)
            return None

    def _chat(self, h: _Handler, body: bytes) -> None:
        entry: dict[str, Any] = {"t": time.monotonic(), "status": 0, "kind": "samples",
                                 "authorization": h.headers.get("Authorization"),
                                 "body_sha": hashlib.sha256(body).hexdigest(), "fault": None}
        try:
            req = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            req = None
        messages = req.get("messages") if isinstance(req, dict) else None
        parsed = parse_prompt(messages) if isinstance(messages, list) else None
        if parsed:
            entry["kind"] = parsed["kind"]
        with self._lock:
            self._stats["requests"] += 1
            if parsed and parsed["kind"] in ("judge", "pairwise"):
                self._stats["judge"] += 1
                if parsed["kind"] == "pairwise":
                    self._stats["pairwise"] += 1
        answer = None
        try:
            answer = self._decide(h, req, messages, parsed, entry)
        finally:
            # Log and count *before* sending, so a client that has its answer also sees it in stats().
            entry["status"] = answer[0] if answer else 499
            with self._lock:
                if entry["status"] == 200:
                    self._stats["ok"] += 1
                self._log.append(entry)
                if len(self._log) > MAX_LOG + MAX_LOG // 10:
                    del self._log[: len(self._log) - MAX_LOG]
        if answer is None:
            h.close_connection = True
            return
        status, obj, headers = answer
        if isinstance(obj, _Streamed):
            self._send_stream(h, obj)
        else:
            h._send(status, obj, headers=headers)

    def _hold(self, h: "_Handler", seconds: float) -> bool:
        """Sleep up to `seconds`; False (at once) when the server stops or the client has gone."""
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and h._client_alive():
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._stopping.wait(min(0.05, left))
        return False

    def _send_stream(self, h: "_Handler", s: "_Streamed") -> None:
        """The completion as server-sent events, in HTTP chunks (so the connection is kept alive)."""
        c = s.completion
        content = c["choices"][0]["message"]["content"]
        head = {k: c[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}
        step = max(1, -(-len(content) // 4))
        deltas = [{"role": "assistant", "content": ""}] + [{"content": content[i:i + step]}
                                                          for i in range(0, len(content), step)]
        events = [head | {"choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]}
                  for d in deltas]
        events.append(head | {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if s.include_usage:
            events.append(head | {"choices": [], "usage": c["usage"]})
        try:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            data = [("data: " + (e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)) + "\n\n").encode()
                    for e in events + ["[DONE]"]]
            chunks = [b"%x\r\n%s\r\n" % (len(d), d) for d in data] + [b"0\r\n\r\n"]
            # in one write, or two around a stall: the client's parsing is what the stream tests, not the pacing
            cut = 2 if s.stall else len(chunks)
            h.wfile.write(b"".join(chunks[:cut]))
            h.wfile.flush()
            if cut < len(chunks):
                if not self._hold(h, self.faults.hang_s):
                    h.close_connection = True
                    return
                h.wfile.write(b"".join(chunks[cut:]))
                h.wfile.flush()
        except (OSError, ValueError):
            h.close_connection = True

    @staticmethod
    def _err(status: int, message: str, etype: str, code: str | None = None,
             headers: dict | None = None) -> tuple[int, dict, dict | None]:
        return status, {"error": {"message": message, "type": etype, "param": None, "code": code}}, headers

    def _decide(self, h: _Handler, req: Any, messages: Any, parsed: dict | None,
                entry: dict) -> tuple[int, dict, dict | None] | None:
        """The response to send as (status, body, headers), or None to send nothing (client gone / stopping)."""
        if not h._authorized():
            self._count("http_401")
            return self._err(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if parsed is None or not messages:
            self._count("http_400")
            return self._err(400, "body must be a JSON object with a non-empty 'messages' list",
                             "invalid_request_error")
        if req.get("stream") and not self.stream:
            self._count("http_400")
            return self._err(400, "stream=true is not supported by this server", "invalid_request_error")
        wait = self._admit(time.monotonic())
        if wait is not None:
            with self._lock:
                self._stats["http_429"] += 1
                self._stats["rate_limited_429"] += 1
            return self._err(429, f"Rate limit reached: {self.capacity} requests per {self.window_s:g} s.",
                             "requests", "rate_limit_exceeded", headers={"Retry-After": f"{wait:.3f}"})
        with self._lock:
            faults = self._faults
            fault = faults.pick(self._rng.random())
            if fault == "429":
                self._stats["fault_429"] += 1
            if fault is not None:
                key = {"500": "http_500", "429": "http_429", "timeout": "timeouts"}.get(fault, fault)
                self._stats[key] += 1
        entry["fault"] = fault
        stream = bool(req.get("stream"))
        if (fault == "timeout" or (fault == "stall" and not stream)) and not self._hold(h, faults.hang_s):
            return None
        if self.latency_s > 0 and self._stopping.wait(self.latency_s):
            return None
        if fault == "500":
            return self._err(500, "Injected server error.", "server_error")
        if fault == "429":
            return self._err(429, "Injected rate limit.", "requests", "rate_limit_exceeded",
                             headers={"Retry-After": f"{max(0.0, faults.retry_after_s):.3f}"})
        good = content_for(messages)
        if fault == "malformed":
            content = _malformed(parsed, good, _sha(json.dumps(messages, sort_keys=True)))
        elif fault == "think":
            content = _think(parsed, good)
        else:
            content = good
        prompt_tokens = sum(_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = _tokens(content)
        model = req.get("model")
        completion = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model if isinstance(model, str) and model else self.model,
            "system_fingerprint": "fp_fake_llm",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if not stream:
            return 200, completion, None
        options = req.get("stream_options")
        include_usage = self.stream_usage and isinstance(options, dict) and bool(options.get("include_usage"))
        self._count("streamed")
        return 200, _Streamed(completion, include_usage, fault == "stall"), None


@dataclass
class _Streamed:
    """A 200 answer to send as server-sent events (`FakeLLMServer._send_stream`)."""

    completion: dict
    include_usage: bool
    stall: bool


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible chat-completions server (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    ap.add_argument("--rpm", type=int, default=None, help="requests per minute (sliding window)")
    ap.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--model", default="fake-model")
    for name in ("500", "429", "timeout", "malformed", "think", "stall"):
        ap.add_argument(f"--p-{name}", type=float, default=0.0, help=f"probability of the {name} fault")
    ap.add_argument("--retry-after", type=float, default=1.0)
    ap.add_argument("--hang", type=float, default=30.0)
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = ap.parse_args(argv)
    faults = Faults(p_500=a.p_500, p_429=a.p_429, p_timeout=a.p_timeout, p_malformed=a.p_malformed,
                    p_think=a.p_think, p_stall=a.p_stall, retry_after_s=a.retry_after, hang_s=a.hang)
    srv = FakeLLMServer(latency_s=a.latency, rpm=a.rpm, window_s=a.window, faults=faults, seed=a.seed,
                        api_key=a.api_key, model=a.model, port=a.port)
    srv.log_requests = a.verbose
    # Ctrl-C stops it even when started from a background job, which inherits SIGINT ignored (Python then
    # installs no KeyboardInterrupt handler of its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    srv.start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        print(json.dumps(srv.stats()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
