"""The repository's own names, and how to find them in a model's answer.

`build_index` reads a project's chunks once (after every ingest) and lists every name the repository defines
or documents: from Python chunks (through `ast`) its modules, classes, exceptions, functions, methods,
parameters, constants and re-exports, each also under its qualified name (`tidemark.ratecard.RateCard.quote`);
from the documents, the code spans (`retry.max_attempts`, `--bunker-index`, `TM-3004`, ``tidemark quote``),
classified as config keys, CLI flags and commands, error codes or plain code names.

`RepoIndex` answers the two questions the repository-grounded metrics ask of a text:
- `mentions(text)`: which of the repository's *distinctive* names it contains. Distinctive means a name a
  sentence would not contain by accident: it has `_`, `.`, `-`, a digit, two capitals (`RateCard`, `EUR`), or it
  is a multi-word CLI command or the package itself. Plain words (`quote`, `region`, `Decimal`) are left out
  even when they are names in the code, since prose uses them too.
- `claims(text)`: the names that *present themselves* as the repository's: dotted names under one of its
  top-level packages (`tidemark.x.y`), names imported from it (`from tidemark.x import A`) and modules imported
  (`import tidemark.x`). `unknown(text)` are the claims that name nothing the repository has: hallucinations.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from backend.facts import module_of, parse_python
from backend.markdown import parse_document, strip_fences

_CODE_SPAN = re.compile(r":\w+:`~?([^`\n]+)`|``([^`\n]+)``|`([^`\n]+)`")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"(?<![\w.]){_NAME}(?:\.{_NAME})*")
_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
_ERROR_CODE = re.compile(r"(?<![\w-])[A-Z][A-Z0-9]*-\d{2,}(?![\w-])")
_FROM_IMPORT = re.compile(rf"\bfrom\s+({_NAME}(?:\.{_NAME})*)\s+import\s+(\([^)]*\)|[^\n;#]+)")
_IMPORT = re.compile(rf"^\s*import\s+({_NAME}(?:\.{_NAME})*)", re.M)
_NOT_PACKAGES = {"tests", "test", "examples", "example", "docs", "doc", "scripts", "tools", "benchmarks", "bench"}


def is_distinctive(name: str) -> bool:
    """A name a sentence would not contain by accident (see the module docstring)."""
    if len(name) < 3:
        return False
    if " " in name or any(c in name for c in "_.-") or any(c.isdigit() for c in name):
        return True
    return sum(c.isupper() for c in name) >= 2


# ---- building ------------------------------------------------------------------------------------

def build_index(chunks: list[dict]) -> list[dict]:
    """Index rows (`name`, `kind`, `path`, `qualified`) of every name in `chunks`, each name and kind once.

    `chunks` need `path`, `kind` and `text` (the store's chunk rows)."""
    rows: dict[tuple[str, str], dict] = {}
    roots = package_roots(c["path"] for c in chunks)

    def add(name: str, kind: str, path: str, qualified: bool = False) -> None:
        name = name.strip()
        if name and (name, kind) not in rows:
            rows[(name, kind)] = {"name": name, "kind": kind, "path": path, "qualified": qualified}

    for c in chunks:
        if c["kind"] == "python":
            _python_names(c["text"], c["path"], c.get("symbol"), roots, add)
        else:
            _doc_names(c["text"], c["path"], roots, add)
    return sorted(rows.values(), key=lambda r: (r["name"], r["kind"]))


def package_roots(paths) -> set[str]:
    """The repository's top-level Python packages and modules (`tidemark`), from its file paths."""
    roots = set()
    for path in paths:
        module = module_of(path)
        if module and module.split(".")[0] not in _NOT_PACKAGES:
            roots.add(module.split(".")[0])
    return roots


def _python_names(text: str, path: str, symbol: str | None, roots: set[str], add) -> None:
    module = module_of(path)
    if module and _root(module) not in roots:
        module = None  # tests and examples: their names are not the repository's API
    if module:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            add(".".join(parts[:i]), "module", path, qualified=True)
        if symbol and symbol != module and re.fullmatch(rf"{_NAME}(?:\.{_NAME})*", symbol):
            add(symbol, "method" if "." in symbol else "function", path)  # a chunk cut mid-definition
            add(f"{module}.{symbol}", "method" if "." in symbol else "function", path, qualified=True)
    tree = parse_python(text)
    if tree is None:
        return

    def qualified(name: str, kind: str) -> None:
        add(name, kind, path)
        if module:
            add(f"{module}.{name}", kind, path, qualified=True)

    def params(fn) -> None:
        a = fn.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs:
            if arg.arg not in {"self", "cls"}:
                add(arg.arg, "parameter", path)

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            is_error = node.name.endswith(("Error", "Exception", "Warning")) or any(
                ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases)
            qualified(node.name, "exception" if is_error else "class")
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qualified(f"{node.name}.{member.name}", "method")
                    params(member)
                elif isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
                    qualified(f"{node.name}.{member.target.id}", "attribute")
                elif isinstance(member, ast.Assign):
                    for t in member.targets:
                        if isinstance(t, ast.Name):
                            qualified(f"{node.name}.{t.id}", "attribute")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qualified(node.name, "function")
            params(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper():
                    qualified(t.id, "constant")
        elif isinstance(node, ast.ImportFrom) and module and (node.level or _root(node.module or "") == _root(module)):
            for alias in node.names:  # re-exports: `tidemark.RateCard` is as real as `tidemark.ratecard.RateCard`
                if alias.name != "*":
                    add(f"{module}.{alias.asname or alias.name}", "reexport", path, qualified=True)


def _root(dotted: str) -> str:
    return dotted.split(".")[0]


def _doc_names(text: str, path: str, roots: set[str], add) -> None:
    # Only closed fences go: a chunk may start or end inside a code block the chunker split, and an unclosed
    # fence there is as likely the block's closing line followed by prose as code running to the end.
    prose = strip_fences(text, [f for f in parse_document(text).fences if f.closed])
    for code in _ERROR_CODE.findall(prose):  # error catalogues name their codes in headings and prose too
        add(code, "error_code", path)
    for m in _CODE_SPAN.finditer(prose):
        span = (m.group(1) or m.group(2) or m.group(3)).strip()
        if "<" in span and ">" in span and span.startswith(":"):
            continue
        span = span.removesuffix("()")
        words = span.split()
        if _FLAG.fullmatch(span.split("=")[0].split(" ")[0]) and len(words) <= 2:
            add(words[0].split("=")[0], "flag", path)
        elif _ERROR_CODE.fullmatch(span):
            add(span, "error_code", path)
        elif len(words) > 1:
            command = words[:next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]
            if words[0] in roots and 2 <= len(command) <= 3 and all(re.fullmatch(r"[a-z][a-z0-9_-]*", w)
                                                                      for w in command):
                add(" ".join(command), "cli_command", path)
        elif re.fullmatch(rf"{_NAME}(?:\.{_NAME})*", span):
            if _root(span) in roots:  # documented, not proof that it exists (docs name old APIs too)
                add(span, "documented", path)
            elif "." in span and span.islower() and _mentions_setting(text, span):
                add(span, "config_key", path)
            else:
                add(span, "code_span", path)


def _mentions_setting(text: str, span: str) -> bool:
    """Whether the paragraph that names `span` speaks of it as a setting (a default, a config or env key)."""
    for paragraph in re.split(r"\n\s*\n", text):
        if span in paragraph and re.search(r"\b(default|config|configuration|env|setting|key)\b", paragraph, re.I):
            return True
    return False


# ---- looking up --------------------------------------------------------------------------------------

@dataclass
class RepoIndex:
    """The index of one project, ready to look texts up in."""

    rows: list[dict]
    names: set[str] = field(init=False)
    """Distinctive names (see `is_distinctive`) and the package roots."""
    qualified: set[str] = field(init=False)
    roots: set[str] = field(init=False)
    commands: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.qualified = {r["name"] for r in self.rows if r["qualified"]}
        self.roots = {n.split(".")[0] for n in self.qualified}
        self.names = {r["name"] for r in self.rows if is_distinctive(r["name"])} | self.roots
        self.commands = sorted({r["name"] for r in self.rows if r["kind"] == "cli_command"}, key=len, reverse=True)

    def mentions(self, text: str) -> set[str]:
        """The repository's distinctive names that `text` contains (a dotted name also counts for its parts:
        `tidemark.ratecard.RateCard` mentions `tidemark.ratecard` and `RateCard`)."""
        found = set()
        for token in _DOTTED.findall(text):
            parts = token.split(".")
            for i in range(len(parts)):
                for j in range(i + 1, min(len(parts), i + 6) + 1):
                    candidate = ".".join(parts[i:j])
                    if candidate in self.names:
                        found.add(candidate)
        found |= {f for f in _FLAG.findall(text) if f in self.names}
        found |= {c for c in _ERROR_CODE.findall(text) if c in self.names}
        found |= {c for c in self.commands if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text)}
        return found

    def claims(self, text: str) -> set[str]:
        """Names in `text` that present themselves as the repository's (see the module docstring)."""
        if not self.roots:
            return set()
        out = {t.rstrip(".") for t in _DOTTED.findall(text) if t.split(".")[0] in self.roots and "." in t}
        for m in _FROM_IMPORT.finditer(text):
            source = m.group(1)
            if _root(source) in self.roots:
                out.add(source)
                for name in m.group(2).strip("()").replace("\n", " ").split(","):
                    name = name.split(" as ")[0].strip().strip("`")
                    if re.fullmatch(_NAME, name):
                        out.add(f"{source}.{name}")
        out |= {m for m in _IMPORT.findall(text) if _root(m) in self.roots}
        return out

    def unknown(self, claims: set[str]) -> set[str]:
        """The claims that name nothing this repository has."""
        return {c for c in claims if c not in self.qualified}


def index_from_chunks(chunks: list[dict]) -> RepoIndex:
    return RepoIndex(build_index(chunks))
