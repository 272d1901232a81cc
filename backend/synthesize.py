"""Synthesis, the pure parts around the one LLM call: plan work units, render prompts, key the cache,
parse responses in layers, build samples with provenance, estimate cost; and the offline heuristic
generator that answers the same prompts from the documents' own structure.

A unit is one request: (chunk, task, index). Its cache key hashes (model, messages, parameters, index),
so a resumed run finds every response it already paid for.

Response contract (documented in the README):
    {"samples": [{"instruction": str, "input": str (optional), "output": str,
                  "messages": [{"role": "user"|"assistant", "content": str}, ...] (multiturn only)}]}
Judge contract:
    {"score": 1-10, "reason": str}
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from backend.facts import extract_facts, fact_samples, module_of, probe_samples
from backend.markdown import parse_answer
from backend.synth_config import PROBE_TASK, TASKS, SynthConfig

CODE_KINDS = {"python", "code", "spec", "notebook"}
LANGUAGE_INSTRUCTION = {
    "en": "Write every instruction and answer in English.",
    "zh": "所有指令和回答都用简体中文书写（代码、标识符和错误码保持原样）。",
}


class ParseError(ValueError):
    """Nothing usable could be recovered from a response; the message says what was wrong."""


# --- templates -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptTemplate:
    task: str
    system: str
    user: str
    version: str  # "<task>@<hash of the file>": samples record which wording produced them


def load_template(prompts_dir: str | Path, task: str) -> PromptTemplate:
    """Read `<task>.md`: a `# system` part and a `# user` part, with $placeholders."""
    path = Path(prompts_dir) / f"{task}.md"
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^# system\n(.*?)^# user\n(.*)\Z", text, re.S | re.M)
    if not match:
        raise ValueError(f"{path}: needs a '# system' line, then a '# user' line, each followed by its text")
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return PromptTemplate(task, match.group(1).strip(), match.group(2).strip(), f"{task}@{digest}")


# --- units -----------------------------------------------------------------------------------
@dataclass
class Unit:
    cache_key: str
    chunk_id: str
    path: str
    start_line: int
    end_line: int
    heading: str
    kind: str
    symbol: str | None
    text: str
    task: str
    index: int
    template_version: str
    messages: list[dict]
    est_tokens_in: int
    repository: str = ""
    """How the heuristic generator names the repository in its questions (`repository_name`)."""
    file_sha256: str | None = None
    source_commit: str | None = None
    """The source file's content hash and git commit (None outside git): the samples' provenance, not in the prompt."""

    def as_dict(self) -> dict:
        return asdict(self)


def eligible_tasks(chunk: dict, generator: str | None = None) -> list[str]:
    """Tasks that make sense for a chunk: code tasks need code, conversations need prose. For the heuristic
    generator, `facts` needs a fact it can find (an LLM finds its own)."""
    text = chunk["text"]
    has_code = chunk["kind"] in CODE_KINDS or "```" in text or "\n>>> " in text or "::\n" in text
    if chunk["kind"] == "config":
        tasks = ["qa", "facts"]
    elif chunk["kind"] in CODE_KINDS:
        tasks = ["qa", "codegen", "explain", "completion", "facts"]
    else:
        tasks = ["qa", "multiturn", "facts"] + (["codegen", "completion"] if has_code else [])
    if generator == "heuristic" and not chunk_facts(chunk):
        tasks.remove("facts")
    return tasks


def chunk_facts(chunk: dict) -> list:
    """The facts the heuristic finds in a chunk (`backend.facts.extract_facts`)."""
    return extract_facts(chunk["text"], chunk["kind"], chunk.get("path", ""), " > ".join(chunk.get("heading_path") or []),
                         chunk.get("symbol"))


def choose_tasks(chunk: dict, cfg: SynthConfig) -> list[str]:
    """Weighted draw without replacement, seeded by the chunk: the same chunk always gets the same tasks."""
    rng = random.Random(f"{cfg.seed}:{chunk['chunk_id']}")
    pool = [t for t in eligible_tasks(chunk, cfg.generator) if cfg.task_mix.get(t, 0) > 0]
    chosen = []
    while pool and len(chosen) < cfg.tasks_per_chunk:
        weights = [cfg.task_mix[t] for t in pool]
        pick = rng.choices(pool, weights=weights)[0]
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def render_messages(template: PromptTemplate, chunk: dict, cfg: SynthConfig, project: str) -> list[dict]:
    heading = " > ".join(chunk["heading_path"]) or chunk["path"]
    values = dict(project=project, task=template.task, count=cfg.samples_per_request, path=chunk["path"],
                  lines=f"{chunk['start_line']}-{chunk['end_line']}", heading=heading, chunk=chunk["text"],
                  language_instruction=LANGUAGE_INSTRUCTION[cfg.language])
    return [{"role": "system", "content": Template(template.system).safe_substitute(values)},
            {"role": "user", "content": Template(template.user).safe_substitute(values)}]


def cache_key(model: str, messages: list[dict], params: dict, index: int) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params, "index": index}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def request_params(cfg: SynthConfig) -> dict:
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_output_tokens,
            "json_mode": cfg.endpoint.json_mode}


def wants_probe(chunk: dict, cfg: SynthConfig) -> bool:
    """Whether this chunk also gets a knowledge-probe request: a seeded draw, the same for the chunk every time
    (for the heuristic generator, only chunks where it finds a fact to ask about)."""
    if cfg.probe_share <= 0 or cfg.generator == "heuristic" and not chunk_facts(chunk):
        return False
    digest = hashlib.sha256(f"{cfg.seed}:probe:{chunk['chunk_id']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < cfg.probe_share


def plan_units(chunks: list[dict], cfg: SynthConfig, project: str) -> list[Unit]:
    """Every (chunk, task) request of a run, in a stable order: the chunk's drawn tasks, then its probe request."""
    wanted = [t for t in TASKS if cfg.task_mix.get(t, 0) > 0] + ([PROBE_TASK] if cfg.probe_share > 0 else [])
    templates = {t: load_template(cfg.prompts_dir, t) for t in wanted}
    params = request_params(cfg)
    units = []
    usable = [c for c in chunks if c["token_count"] >= cfg.min_chunk_tokens]
    repository = repository_name(chunks, project)
    for chunk in usable[: cfg.max_chunks]:
        for task in choose_tasks(chunk, cfg) + ([PROBE_TASK] if wants_probe(chunk, cfg) else []):
            messages = render_messages(templates[task], chunk, cfg, project)
            est = sum(estimate_tokens(m["content"]) for m in messages)
            units.append(Unit(
                cache_key=cache_key(cfg.model_name(), messages, params, 0), chunk_id=chunk["chunk_id"],
                path=chunk["path"], start_line=chunk["start_line"], end_line=chunk["end_line"],
                heading=" > ".join(chunk["heading_path"]), kind=chunk["kind"], symbol=chunk.get("symbol"),
                text=chunk["text"], task=task, index=0, template_version=templates[task].version,
                messages=messages, est_tokens_in=est, repository=repository,
                file_sha256=chunk.get("file_sha256"), source_commit=chunk.get("git_commit")))
    return units


def coverage_order(units: list[Unit], seed: int) -> list[Unit]:
    """The units interleaved round-robin across their files, the files in a seeded order: a run that stops early
    (`target_samples`) has covered the repository evenly, not its first files."""
    by_file: dict[str, list[Unit]] = {}
    for u in units:
        by_file.setdefault(u.path, []).append(u)
    files = sorted(by_file)
    random.Random(f"{seed}:coverage").shuffle(files)
    queues = [by_file[f] for f in files]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def unit_failure(exc: BaseException) -> str:
    """An unexpected failure of one unit, for its dead letter: the exception's class and message, then its
    traceback (the end of it, where the cause is, when long)."""
    text = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # the store takes no lone surrogate
    return text if len(text) <= 4000 else text[:1000] + "\n...\n" + text[-3000:]


def estimate_tokens(text: str) -> int:
    from backend.tokens import token_counter

    return token_counter(None)(text)


# --- cost ------------------------------------------------------------------------------------
def cost_usd(tokens_in: int, tokens_out: int, price: dict | None) -> float:
    if not price:
        return 0.0
    return (tokens_in * price["input"] + tokens_out * price["output"]) / 1e6


def expected_output_tokens(cfg: SynthConfig) -> int:
    """A planning figure: ~220 tokens per sample asked for, capped by max_output_tokens."""
    return min(cfg.max_output_tokens, 220 * cfg.samples_per_request)


def estimate_run(units: list[Unit], cfg: SynthConfig) -> dict:
    """Requests, tokens and cost a run would spend if no response were cached."""
    tokens_in = sum(u.est_tokens_in for u in units)
    tokens_out = expected_output_tokens(cfg) * len(units) if cfg.generator == "openai" else 0
    price = cfg.price()
    return {"requests": len(units), "tokens_in": tokens_in, "tokens_out": tokens_out,
            "cost_usd": round(cost_usd(tokens_in, tokens_out, price), 4) if price else None,
            "model": cfg.model_name(), "priced": price is not None}


# --- parsing ---------------------------------------------------------------------------------
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
# A reply is not always Markdown: models open the fence mid-line ("Sure! ```json") or glue the closing fence to
# the JSON ("}```"), where CommonMark sees no fence. After the reply's real fences, this older, looser reading
# is tried too, so such replies still parse as before (a list of samples would else lose all but its first).
_LOOSE_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.S)


def strip_reasoning(content: str) -> str:
    """Drop <think>…</think> (also an unclosed one at the start, as reasoning models emit when cut off)."""
    content = _THINK.sub("", content)
    if re.match(r"\s*<think>", content, re.I):
        content = content.split("</think>")[-1] if "</think>" in content else ""
    return content.strip()


def _repair(text: str) -> str:
    """Common breakage of LLM JSON: trailing commas, smart quotes, bare newlines inside strings."""
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r",\s*([}\]])", r"\1", text)
    out, in_str, escaped = [], False, False
    for ch in text:
        if in_str and ch == "\n":
            out.append("\\n")
            continue
        out.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_str = not in_str
    return "".join(out)


def _json_candidates(content: str):
    body = strip_reasoning(content)
    yield body
    for fence in parse_answer(body):
        if fence.language in ("", "json"):
            yield fence.content.strip()
    for block in _LOOSE_FENCE.findall(body):
        yield block.strip()
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        yield body[start:end + 1]


def parse_json_object(content: str) -> dict:
    """The first JSON object recoverable from `content`: as is, fenced, outermost braces, then repaired.

    Raises:
        ParseError: no layer produced a JSON object.
    """
    candidates = list(_json_candidates(content))
    for fix in (lambda s: s, _repair):
        for cand in candidates:
            try:
                value = json.loads(fix(cand))
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
            if isinstance(value, list):
                return {"samples": value}
    raise ParseError("no JSON object in the response" if "{" not in content else "malformed JSON")


def _salvage_items(content: str) -> list[dict]:
    """Last layer: parse each `{"instruction": ...}` object on its own, keeping the ones that parse."""
    body = strip_reasoning(content)
    items = []
    for match in re.finditer(r'\{\s*"instruction"', body):
        depth, in_str, escaped = 0, False, False
        for i in range(match.start(), len(body)):
            ch = body[i]
            if in_str:
                escaped = (ch == "\\") and not escaped
                if ch == '"' and not escaped:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    for fix in (lambda s: s, _repair):
                        try:
                            items.append(json.loads(fix(body[match.start():i + 1])))
                            break
                        except ValueError:
                            continue
                    break
    return items


def parse_samples(content: str) -> list[dict]:
    """Samples from a generator response, through every parsing layer; invalid items are dropped.

    Raises:
        ParseError: not one valid sample could be recovered.
    """
    try:
        items = parse_json_object(content).get("samples", [])
    except ParseError:
        items = _salvage_items(content)
        if not items:
            raise
    if not isinstance(items, list):
        raise ParseError("'samples' is not a list")
    samples = [s for s in (_clean_item(i) for i in items) if s is not None]
    if not samples:
        raise ParseError(f"{len(items)} item(s) but none with a non-empty instruction and output")
    return samples


def _clean_item(item) -> dict | None:
    if not isinstance(item, dict):
        return None
    instruction, output = item.get("instruction"), item.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not instruction.strip() or not output.strip():
        return None
    inp = item.get("input") if isinstance(item.get("input"), str) else ""
    messages = item.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                          and m.get("role") in {"user", "assistant"} for m in messages) and messages:
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        messages = None
    fact = item.get("fact")
    fact = fact.strip() if isinstance(fact, str) and fact.strip() else None
    return {"instruction": instruction.strip(), "input": inp.strip(), "output": output.strip(), "messages": messages,
            "fact": fact}


def parse_judgement(content: str) -> tuple[float, str]:
    """(score 1-10, reason) from a judge response.

    Raises:
        ParseError: no score in range.
    """
    obj = parse_json_object(content)
    try:
        score = float(obj["score"])
    except (KeyError, TypeError, ValueError):
        raise ParseError("judge response has no numeric 'score'") from None
    if not 1 <= score <= 10:
        raise ParseError(f"judge score {score} outside 1-10")
    return score, str(obj.get("reason", ""))


def format_sample_for_judge(sample: dict) -> str:
    """A sample as the judge reads it."""
    if sample.get("messages"):
        return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in sample["messages"])
    parts = [f"INSTRUCTION: {sample['instruction']}"]
    if sample.get("input"):
        parts.append(f"INPUT: {sample['input']}")
    parts.append(f"OUTPUT: {sample['output']}")
    return "\n\n".join(parts)


def render_judge_messages(template: PromptTemplate, sample: dict, project: str, cfg: SynthConfig) -> tuple:
    """(messages, cache key) of the judge request for `sample`."""
    values = {"project": project, "sample": format_sample_for_judge(sample)}
    messages = [{"role": "system", "content": Template(template.system).safe_substitute(values)},
                {"role": "user", "content": Template(template.user).safe_substitute(values)}]
    return messages, cache_key(cfg.endpoint.model, messages, request_params(cfg), 0)


def parse_pairwise(content: str) -> tuple[str, str]:
    """(winner "A" | "B" | "tie", reason) from a pairwise judge response.

    Raises:
        ParseError: no valid winner.
    """
    obj = parse_json_object(content)
    winner = str(obj.get("winner", "")).strip()
    winner = {"a": "A", "b": "B", "tie": "tie"}.get(winner.lower())
    if winner is None:
        raise ParseError(f"pairwise response has no winner A, B or tie: {str(obj)[:200]}")
    return winner, str(obj.get("reason", ""))


def render_pairwise_messages(template: PromptTemplate, question: str, reference: str, a: str, b: str,
                             project: str, cfg: SynthConfig) -> tuple:
    """(messages, cache key) asking which of answers `a` and `b` is better."""
    values = {"project": project, "question": question, "reference": reference, "a": a, "b": b}
    messages = [{"role": "system", "content": Template(template.system).safe_substitute(values)},
                {"role": "user", "content": Template(template.user).safe_substitute(values)}]
    return messages, cache_key(cfg.endpoint.model, messages, request_params(cfg), 0)


def build_samples(unit: Unit, items: list[dict], *, project: str, run_id: str, generator: str,
                  language: str) -> list[dict]:
    """Sample rows with provenance; ids derive from the run and the unit's cache key, so a resumed run
    makes the same ids and a new run of the same config its own rows."""
    rows = []
    for i, item in enumerate(items):
        rows.append({
            "sample_id": hashlib.sha1(f"{run_id}:{unit.cache_key}:{i}".encode()).hexdigest()[:20], "project": project,
            "run_id": run_id, "cache_key": unit.cache_key, "chunk_id": unit.chunk_id, "path": unit.path,
            "start_line": unit.start_line, "end_line": unit.end_line, "task": unit.task, "language": language,
            "instruction": item["instruction"], "input": item["input"], "output": item["output"],
            "messages": item["messages"] if unit.task == "multiturn" else None, "generator": generator,
            "template_version": unit.template_version,
            "fact": item.get("fact") if unit.task == PROBE_TASK else None,
            "source_commit": unit.source_commit, "file_sha256": unit.file_sha256})
    return rows


# --- the offline heuristic generator -----------------------------------------------------------
def heuristic_response(unit: Unit, count: int) -> str:
    """A response in the generator contract, derived from the chunk's own structure; no model involved.

    Headings become questions answered by their section's sentences; docstrings become explanations;
    functions become completion tasks; fenced examples become code-generation tasks.
    """
    maker = {"qa": _h_qa, "multiturn": _h_multiturn, "codegen": _h_codegen, "explain": _h_explain,
             "completion": _h_completion, "facts": _h_facts, PROBE_TASK: _h_probe}[unit.task]
    return json.dumps({"samples": maker(unit)[:count]}, ensure_ascii=False)


_NOT_PACKAGES = {"tests", "test", "examples", "example", "docs", "doc", "scripts", "tools", "benchmarks", "bench"}


def repository_name(chunks: list[dict], project: str) -> str:
    """How questions name the repository: its main Python package (the top-level folder holding the most
    Python chunks, `src/` looked through), else the project's name."""
    counts: dict[str, int] = {}
    for c in chunks:
        parts = [p for p in Path(c["path"]).parts if p != "src"]
        if c["path"].endswith(".py") and len(parts) > 1 and parts[0].isidentifier() and parts[0] not in _NOT_PACKAGES:
            counts[parts[0]] = counts.get(parts[0], 0) + 1
    return max(sorted(counts), key=counts.get) if counts else project


def _unit_facts(unit: Unit):
    return extract_facts(unit.text, unit.kind, unit.path, unit.heading, unit.symbol)


def _h_facts(unit: Unit) -> list[dict]:
    """One question per fact the chunk states (a default, an exception, a module, a table cell ...)."""
    return fact_samples(_unit_facts(unit), unit.repository)


def _h_probe(unit: Unit) -> list[dict]:
    """The same facts asked in other words, each with the fact alone in `fact`."""
    return probe_samples(_unit_facts(unit), unit.repository)


def _sentences(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", " ", text, flags=re.S)
    prose = "\n".join(line for line in prose.splitlines()
                      if not re.match(r"\s*(#|=+$|-+$|~+$|\.\. |:|\||<)", line))
    prose = re.sub(r"\s+", " ", prose)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`*])", prose) if len(s.strip()) > 30]


def _topic(unit: Unit) -> str:
    return unit.heading.split(" > ")[-1] if unit.heading else Path(unit.path).stem


def _h_qa(unit: Unit) -> list[dict]:
    node = _definition(unit)
    if node is not None:
        return _h_qa_code(unit, node)
    sents = _sentences(unit.text)
    if not sents:
        return []
    topic, where = _topic(unit), unit.path
    out = [{"instruction": f"What does the documentation of {where} say about \"{topic}\"?", "input": "",
            "output": " ".join(sents[:4])}]
    for term in dict.fromkeys(re.findall(r"`([A-Za-z_][\w.]*(?:\(\))?)`", unit.text)):
        about = [s for s in sents if term in s]
        if about:
            out.append({"instruction": f"In this repository, what is `{term}` ({topic})?", "input": "",
                        "output": " ".join(about[:3])})
    if len(sents) > 4:
        out.append({"instruction": f"Give the details of \"{topic}\" beyond its summary.", "input": "",
                    "output": " ".join(sents[4:9])})
    return out


def _h_qa_code(unit: Unit, node: ast.AST) -> list[dict]:
    """Questions about a definition, answered by its docstring and signature."""
    name = unit.symbol or node.name
    doc = ast.get_docstring(node) or ""
    sig = _signature(unit, node)
    out = []
    if doc:
        out.append({"instruction": f"What does `{name}` in `{unit.path}` do?", "input": "",
                    "output": f"`{sig}`\n\n{doc.split(chr(10) * 2)[0]}"})
    args = re.search(r"(?:Args|Parameters|Raises|Returns):.*", doc, re.S)
    if args:
        out.append({"instruction": f"What are the parameters, return value and errors of `{name}`?", "input": "",
                    "output": f"`{sig}`\n\n{args.group(0).strip()}"})
    return out


def _signature(unit: Unit, node: ast.AST) -> str:
    """The definition's first line(s) up to the colon that opens its body."""
    lines = unit.text.splitlines()
    first = node.lineno - 1
    last = node.body[0].lineno - 2 if node.body and node.body[0].lineno > node.lineno else first
    return " ".join(line.strip() for line in lines[first:last + 1]).rstrip(":")


def _h_multiturn(unit: Unit) -> list[dict]:
    qa = _h_qa(unit)
    if len(qa) == 1:
        qa.append({"instruction": "Where is that documented, so I can read the whole section?",
                   "output": f"In `{unit.path}`, lines {unit.start_line}-{unit.end_line}"
                             + (f", under \"{unit.heading}\"." if unit.heading else ".")})
    out = []
    for first, second in zip(qa, qa[1:]):
        messages = [{"role": "user", "content": first["instruction"]}, {"role": "assistant", "content": first["output"]},
                    {"role": "user", "content": second["instruction"]},
                    {"role": "assistant", "content": second["output"]}]
        out.append({"instruction": first["instruction"], "input": "", "output": second["output"],
                    "messages": messages})
    return out


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(the prose just before, code) for each fenced Python block or doctest that parses."""
    found = []
    for m in re.finditer(r"```(?:python|py)?\s*\n(.*?)```", text, re.S):
        code = m.group(1).strip()
        before = [s for s in _sentences(text[:m.start()][-600:])]
        if _parses(code):
            found.append((before[-1] if before else "", code))
    doctest = "\n".join(line.strip()[4:] for line in text.splitlines() if line.strip().startswith(">>> "))
    if doctest and _parses(doctest):
        found.append(("", doctest))
    return found


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def _h_codegen(unit: Unit) -> list[dict]:
    out = []
    topic = _topic(unit)
    for before, code in _code_blocks(unit.text):
        goal = before.rstrip(".:") if before else f"use {topic} as documented in {unit.path}"
        out.append({"instruction": f"Write Python code to {goal[0].lower() + goal[1:]}.", "input": "",
                    "output": f"```python\n{code}\n```\nThis follows the documented usage in {unit.path}."})
    node = _definition(unit)
    module = module_of(unit.path)
    if not out and node is not None and module and not node.name.startswith("_"):
        doc = (ast.get_docstring(node) or "").split("\n")[0]
        top = unit.symbol.split(".")[0] if unit.symbol else node.name
        out.append({"instruction": f"Which import gives me `{top}` from this repository, and what is its "
                                   f"signature?", "input": "",
                    "output": f"```python\nfrom {module} import {top}\n```\n`{_signature(unit, node)}`"
                              + (f": {doc}" if doc else "")})
    return out


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _definition(unit: Unit) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None:
    """The function or class a Python chunk defines (never another statement: the builders read its name and
    docstring)."""
    if unit.kind != "python" or not _parses(unit.text):
        return None
    body = ast.parse(unit.text).body
    defs = [n for n in body if isinstance(n, (*_FUNCTIONS, ast.ClassDef))]
    if unit.symbol and "." in unit.symbol:
        # a method part, "class X:\n    def m(...)"; a small one is merged after its class's header, which may hold
        # only a constant ("class X:\n    limit = 0"), so the method is looked for in every such class
        methods = [c.body[0] for c in defs
                   if isinstance(c, ast.ClassDef) and len(c.body) == 1 and isinstance(c.body[0], _FUNCTIONS)]
        named = [m for m in methods if m.name == unit.symbol.rsplit(".", 1)[-1]]
        if named or methods:
            return (named or methods)[0]
    return defs[0] if defs else None


def _h_explain(unit: Unit) -> list[dict]:
    node = _definition(unit)
    if node is None:
        return []
    name = unit.symbol or node.name
    doc = ast.get_docstring(node) or ""
    sig = _signature(unit, node)
    if not doc:
        calls = sorted({n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)})
        raises = sorted({n.exc.func.id for n in ast.walk(node) if isinstance(n, ast.Raise)
                         and isinstance(n.exc, ast.Call) and isinstance(n.exc.func, ast.Name)})
        if not calls and not raises:
            return []
        doc = "It has no docstring; reading its body: " + "; ".join(
            part for part in (f"it calls {', '.join(f'`{c}`' for c in calls)}" if calls else "",
                              f"it raises {', '.join(f'`{r}`' for r in raises)}" if raises else "") if part) + "."
    return [{"instruction": f"Explain what `{name}` in `{unit.path}` does and how to call it.",
             "input": unit.text, "output": f"`{name}` is defined as `{sig}`.\n\n{doc}"}]


def _h_completion(unit: Unit) -> list[dict]:
    node = _definition(unit)
    if node is None or isinstance(node, ast.ClassDef) or not node.body:
        return []
    lines = unit.text.splitlines()
    head_end = node.body[0].end_lineno if ast.get_docstring(node) and len(node.body) > 1 else node.body[0].lineno - 1
    head = "\n".join(lines[:head_end])
    if not head.strip() or head.strip() == unit.text.strip():
        return []
    return [{"instruction": f"Complete the implementation of `{unit.symbol or node.name}` from `{unit.path}`.",
             "input": head, "output": f"```python\n{unit.text}\n```"}]
