"""Short facts a chunk states, asked two ways: once to train on, once to probe whether training took.

A *fact* is one thing a developer looks up and can get exactly right or wrong: a parameter's default, the
exception a function raises, what it returns, the module that defines a class, a constant's value, a cell of a
reference table (an option's default, a key's type), the code that names an error. `extract_facts` finds them
in a chunk's own structure, with no model:

- Python (through `ast`): parameter defaults, the `Raises:` section of docstrings, return annotations, the module
  of each public class and function, module constants.
- Reference tables (Markdown pipe tables and reST simple tables) whose first column names something in code
  (`--service`, ``retry.max_attempts``): each short cell of another column, named by its header.
- Definition-list entries of the form ``key`` … default ``value``.
- Headings of the form `CODE - what it means` (error catalogues: `TM-3004 - currency mismatch`).

`fact_samples` phrases each fact as a training question with a full-sentence answer (the heuristic `facts` task);
`probe_samples` asks for the same fact in other words and keeps the short fact apart (`fact`), so evaluation can
check it (the heuristic `probe` task). The two phrasings never share a template: a probe is never a near-duplicate
of the training question about its fact (curation checks it too).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

MAX_FACT_CHARS = 48
"""Longer values are descriptions, not facts one can get exactly right."""


@dataclass(frozen=True)
class Fact:
    kind: str
    """default | raises | returns | module | constant | column | code"""
    subject: str
    """What the fact is about, as written in code (`ShipmentManifest.quote`, `--service`, `TM-3004`)."""
    value: str
    """The fact itself, short (`1.0`, `RateCardError`, `tidemark.ratecard`)."""
    detail: str = ""
    """What qualifies it: the parameter (default), the condition (raises), the column name (column)."""
    where: str = ""
    """The section or file it comes from, said in the question so it has one answer."""


# ---- extraction ------------------------------------------------------------------------------------

def extract_facts(text: str, kind: str, path: str, heading: str = "", symbol: str | None = None) -> list[Fact]:
    """Every fact the chunk states, in order of appearance, without repeats (same subject, detail and value)."""
    found: list[Fact] = []
    if kind == "python":
        found += _python_facts(text, path, symbol)
    else:
        where = heading.split(" > ")[-1] if heading else Path(path).name
        found += _table_facts(text, where)
        found += _default_facts(text, where)
        found += _code_heading_facts(text)
    seen, out = set(), []
    for f in found:
        key = (f.kind, f.subject, f.detail, f.value)
        if key not in seen and f.value and len(f.value) <= MAX_FACT_CHARS:
            seen.add(key)
            out.append(f)
    return out


def module_of(path: str) -> str | None:
    """Dotted module of a Python file path (`src/` dropped), None for scripts outside a package."""
    p = Path(path)
    if p.suffix != ".py" or p.parent == Path("."):
        return None
    parts = [x for x in p.with_suffix("").parts if x != "src"]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(x.isidentifier() for x in parts) else None


def parse_python(text: str) -> ast.Module | None:
    """The chunk's syntax tree; for a definition cut off mid-body (a long function is split into several
    chunks), the tree of its longest prefix that parses once closed with `pass`; None when nothing parses."""
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        lineno = getattr(exc, "lineno", None)
    lines = text.splitlines()
    end = min(len(lines), lineno or len(lines))
    for cut in range(end, max(0, end - 12), -1):
        head = lines[:cut]
        if not head or not head[-1].strip():
            continue
        indent = len(head[-1]) - len(head[-1].lstrip())
        for extra in (4, 0, 8):
            try:
                return ast.parse("\n".join(head + [" " * (indent + extra) + "pass"]))
            except (SyntaxError, ValueError):
                continue
    return None


def _python_facts(text: str, path: str, symbol: str | None) -> list[Fact]:
    tree = parse_python(text)
    if tree is None:
        return []
    module = module_of(path)
    if module and any(part in {"test", "tests"} or part.startswith("test_") for part in module.split(".")):
        return []  # a test suite's functions are not the repository's API
    out: list[Fact] = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and module:
            out += _constant_facts(node, module)
        elif isinstance(node, ast.ClassDef):
            if module and not node.name.startswith("_"):
                out.append(Fact("module", node.name, module))
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for method in methods:
                if not method.name.startswith("_") or method.name == "__init__":
                    name = node.name if method.name == "__init__" else f"{node.name}.{method.name}"
                    out += _function_facts(method, name, skip_self=True)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            if module:
                out.append(Fact("module", node.name, module))
            out += _function_facts(node, node.name, skip_self=False)
    return out


def _constant_facts(node: ast.AST, module: str) -> list[Fact]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    value = node.value
    if not isinstance(value, ast.Constant):
        return []
    out = []
    for t in targets:
        if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_") and len(t.id) > 2:
            out.append(Fact("constant", t.id, ast.unparse(value), where=module))
    return out


def _function_facts(node: ast.AST, name: str, skip_self: bool) -> list[Fact]:
    out = []
    args = node.args
    positional = args.posonlyargs + args.args
    if skip_self and positional and positional[0].arg in {"self", "cls"}:
        positional = positional[1:]
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    for arg, default in pairs:
        value = ast.unparse(default)
        if value not in {"None", "...", "()", "{}", "[]"}:  # "no value": not a fact worth asking
            out.append(Fact("default", name, value, detail=arg.arg))
    if node.returns is not None:
        returns = ast.unparse(node.returns)
        if returns not in {"None", "Any"}:
            out.append(Fact("returns", name, returns))
    for error, condition in _raises(ast.get_docstring(node) or ""):
        out.append(Fact("raises", name, error, detail=condition))
    return out


_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Yields|Raises|Examples?|Attributes|Notes?)\s*:\s*$")


def _raises(doc: str) -> list[tuple[str, str]]:
    """(exception, condition) pairs of a Google-style `Raises:` section."""
    out, active = [], False
    entry: list[str] | None = None
    for line in doc.splitlines() + [""]:
        section = _SECTION.match(line)
        if section:
            active = section.group(1) == "Raises"
            continue
        if not active:
            continue
        m = re.match(r"^\s{0,8}([A-Z][\w.]*)\s*:\s*(.+)$", line)
        if m:
            if entry:
                out.append((entry[0], " ".join(entry[1:])))
            entry = [m.group(1), m.group(2).strip()]
        elif line.strip() and entry:
            entry.append(line.strip())
        elif not line.strip() and entry:
            out.append((entry[0], " ".join(entry[1:])))
            entry = None
    return [(e, _condition(c)) for e, c in out if c]


def _condition(text: str) -> str:
    """`If the lane is unknown (TM-3001).` → `if the lane is unknown (TM-3001)`; ```TM-0102`` if x` → `if x`;
    a bare description → `(description)`."""
    text = " ".join(text.replace("``", "`").split()).rstrip(".")
    m = re.search(r"\b(if|when|whenever|unless|on|for|after|before)\b", text, re.I)
    if m is None:
        return f"({text})" if text else ""
    text = text[m.start():]
    return text[0].lower() + text[1:]


_CODE_SPAN = re.compile(r"``([^`\n]+)``|`([^`\n]+)`")


def _code_span(cell: str) -> str | None:
    """The cell's one code span when the cell is just that (`--service`, ``retry.jitter``)."""
    cell = cell.strip()
    m = _CODE_SPAN.fullmatch(cell)
    if m:
        return (m.group(1) or m.group(2)).strip()
    return None


def _clean_cell(cell: str) -> str:
    text = _CODE_SPAN.sub(lambda m: m.group(1) or m.group(2), cell)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # markdown links: their words
    return " ".join(text.replace("**", "").replace("*", "").split())


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of the Markdown pipe tables and reST simple tables in `text`."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|?", lines[i + 1].strip()):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append((header, rows))
            continue
        if re.fullmatch(r"=+(\s+=+)+", line):  # a reST simple table: ==== ==== borders
            spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[i])]
            body, j = [], i + 1
            while j < len(lines) and not re.fullmatch(r"=+(\s+=+)+", lines[j].strip()):
                body.append(lines[j])
                j += 1
            header = [_cut(lines[i + 1], s, e, spans) for s, e in spans] if body else []
            rows, k = [], j + 1  # after the border below the header
            while k < len(lines) and lines[k].strip() and not re.fullmatch(r"=+(\s+=+)+", lines[k].strip()):
                rows.append([_cut(lines[k], s, e, spans) for s, e in spans])
                k += 1
            if header:
                out.append((header, rows))
            i = k + 1
            continue
        i += 1
    return out


def _cut(line: str, start: int, end: int, spans: list[tuple[int, int]]) -> str:
    """A reST simple-table cell: the last column runs to the end of the line."""
    if (start, end) == spans[-1]:
        return line[start:].strip()
    return line[start:end + 1].strip()


def _atomic(value: str) -> bool:
    """A cell one can state exactly: a few words, no explanation in brackets, not a placeholder."""
    return (bool(value) and len(value) <= 32 and len(value.split()) <= 4 and not any(c in value for c in "()[];")
            and value.lower() not in {"-", "n/a", "none", "yes", "no", "required", "optional"})


_LONG_COLUMNS = {"meaning", "notes", "note", "description", "what", "details", "read", "comment"}


def _table_facts(text: str, where: str) -> list[Fact]:
    out = []
    for header, rows in _tables(text):
        names = [_clean_cell(h) for h in header]
        for row in rows:
            if len(row) != len(header):
                continue
            subject = _code_span(row[0].split(",")[0])  # the row's key: a name in code, in the first column
            if subject is None:
                continue
            for column, cell in zip(names[1:], row[1:]):
                if not cell or not column or column.lower() in _LONG_COLUMNS:
                    continue
                value = _clean_cell(cell)
                if _atomic(value):
                    out.append(Fact("column", subject, value, detail=column, where=where))
    return out


_DEFAULT = re.compile(r"defaults?\s*(?:is|to|:)?\s*(``[^`]+``|`[^`]+`)")


def _default_facts(text: str, where: str) -> list[Fact]:
    """``key`` … default ``value``: the code span nearest before the word `default`, in the same paragraph (reST
    definition lists, Markdown prose)."""
    out = []
    for entry in re.split(r"\n\s*\n", text):
        for m in _DEFAULT.finditer(entry):
            before = list(_CODE_SPAN.finditer(entry[:m.start()]))
            if not before:
                continue
            subject = (before[-1].group(1) or before[-1].group(2)).strip()
            value = _clean_cell(m.group(1))
            if subject != value and " " not in subject:
                out.append(Fact("default", subject, value, where=where))
    return out


_CODE_HEADING = re.compile(r"^#{1,6}\s+`?([A-Z][A-Z0-9]*-\d{2,}|E\d{3,})`?(?:\s+[-–—]\s+|:\s+)([A-Za-z].*?)\s*$", re.M)


def _code_heading_facts(text: str) -> list[Fact]:
    return [Fact("code", m.group(1), m.group(1), detail=_clean_cell(m.group(2)).rstrip(".")) for m in _CODE_HEADING.finditer(text)]


# ---- phrasing ----------------------------------------------------------------------------------------

# kind → (training question, training answer, probe question, probe answer). `default` with a parameter is
# `parameter`. Fields: subject, detail, value, where, project.
PHRASING = {
    "parameter": ("What is the default value of the `{detail}` parameter of `{subject}`?",
                  "In {project}, `{detail}` of `{subject}` defaults to `{value}`.",
                  "If I call `{subject}` and leave out `{detail}`, what value does it take?",
                  "It takes the default, `{detail}={value}`."),
    "default": ("What is the default of `{subject}` ({where})?",
                "`{subject}` defaults to `{value}` in {project}.",
                "I did not set `{subject}` anywhere. Which value will {project} use for it?",
                "It falls back to the default, `{value}`."),
    "raises": ("Which exception does `{subject}` raise {detail}?",
               "`{subject}` raises `{value}` {detail}.",
               "My call to `{subject}` fails {detail}. What error am I going to see?",
               "You get a `{value}` from `{subject}`."),
    "returns": ("What type does `{subject}` return?",
                "`{subject}` returns `{value}`.",
                "When `{subject}` finishes, what kind of object do I get back?",
                "You get back a `{value}`."),
    "module": ("Which module of {project} defines `{subject}`?",
               "`{subject}` is defined in `{value}`: `from {value} import {subject}`.",
               "Write the import statement for `{subject}`.",
               "`from {value} import {subject}`"),
    "constant": ("What is the value of `{subject}` in `{where}`?",
                 "`{subject}` in `{where}` is `{value}`.",
                 "How is the constant `{subject}` set in {project}'s source?",
                 "`{subject}` is set to `{value}`."),
    "column": ('In the "{where}" table of {project}, what does the "{detail}" column say for `{subject}`?',
               'For `{subject}`, the "{detail}" column says: {value}.',
               "I'm checking `{subject}` in {project}'s documentation ({where}). What is its {detail}?",
               "`{subject}` is listed with {detail}: {value}."),
    "code": ('Which error code does {project} use for "{detail}"?',
             '{project} reports "{detail}" as `{value}`.',
             'An operation in {project} failed with "{detail}". Which code does that error carry?',
             "That error carries the code `{value}`."),
}


def _phrase(f: Fact, project: str, probe: bool) -> tuple[str, str]:
    kind = "parameter" if f.kind == "default" and f.detail else f.kind
    question, answer = PHRASING[kind][2:] if probe else PHRASING[kind][:2]
    fields = {"subject": f.subject, "detail": f.detail, "value": f.value, "where": f.where, "project": project}
    return question.format(**fields), answer.format(**fields)


def fact_samples(facts: list[Fact], project: str) -> list[dict]:
    """The training phrasing: a question, and an answer that states the fact in a full sentence."""
    return [dict(zip(("instruction", "output"), _phrase(f, project, probe=False)), input="") for f in facts]


def probe_samples(facts: list[Fact], project: str) -> list[dict]:
    """The probe phrasing: the same fact asked as a developer would in the moment, in words no training
    question uses; `fact` holds the fact alone, for an exact check of the answer."""
    return [dict(zip(("instruction", "output"), _phrase(f, project, probe=True)), input="", fact=f.value)
            for f in facts]
