"""Readers: turn one file's text into structural sections, each with a heading path and a line range.

A section is the largest unit that belongs together (a Markdown section under its heading, a Python
function, an OpenAPI operation). The chunker keeps sections whole when they fit the token bound
and splits them with language-aware separators when they don't.

Kinds and what their line ranges count:
  markdown, rst, text, html, config, python, code, spec   lines of the file (1-based, inclusive)
  notebook                                                 cells (1-based, inclusive)
"""

from __future__ import annotations

import ast
import gc
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath

import yaml

from backend.markdown import parse_document


@dataclass
class Section:
    heading_path: tuple[str, ...]
    text: str
    start_line: int
    end_line: int
    symbol: str | None = None
    # langchain Language value used to split this section when it is too long ("" = plain text)
    split_language: str = ""
    # finer sections to use instead of generic splitting when this one is too long (Python classes)
    parts: list["Section"] = field(default_factory=list)


class ReadError(ValueError):
    """The file's text could not be parsed as its kind; the detail says where."""


# --- kinds -----------------------------------------------------------------------------------
MARKDOWN_EXT = {".md", ".markdown", ".mdx"}
TEXT_EXT = {".txt", ".text"}
TEXT_NAMES = {"README", "LICENSE", "NOTICE", "CHANGELOG", "CHANGES", "AUTHORS", "CONTRIBUTING", "HISTORY"}
CONFIG_EXT = {".json", ".yaml", ".yml", ".toml", ".ini", ".cfg"}
# extension -> langchain Language value
CODE_EXT = {
    ".js": "js", ".mjs": "js", ".cjs": "js", ".jsx": "js", ".ts": "ts", ".tsx": "ts", ".go": "go",
    ".java": "java", ".kt": "kotlin", ".rs": "rust", ".rb": "ruby", ".php": "php", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".cxx": "cpp", ".cs": "csharp", ".scala": "scala",
    ".swift": "swift", ".lua": "lua", ".pl": "perl", ".hs": "haskell", ".ex": "elixir", ".exs": "elixir",
    ".ps1": "powershell", ".proto": "proto", ".sol": "sol", ".r": "r", ".R": "r", ".sh": "", ".bash": "",
    ".sql": "",
}


def classify(path: str) -> tuple[str | None, str | None]:
    """(kind, language) for a repository path by its name; kind None means not a document we read.

    JSON/YAML files are `config` here; `read_sections` promotes OpenAPI/Swagger ones to `spec`.
    """
    p = PurePosixPath(path)
    ext = p.suffix
    low = ext.lower()
    if low in MARKDOWN_EXT:
        return "markdown", "markdown"
    if low == ".rst":
        return "rst", "rst"
    if low in TEXT_EXT or (not ext and p.name.upper() in TEXT_NAMES):
        return "text", None
    if low in {".html", ".htm"}:
        return "html", "html"
    if low == ".ipynb":
        return "notebook", "python"
    if low in {".py", ".pyi"}:
        return "python", "python"
    if low in CONFIG_EXT:
        return "config", low.lstrip(".")
    if ext in CODE_EXT or low in CODE_EXT:
        lang = CODE_EXT.get(ext, CODE_EXT.get(low))
        return "code", lang or low.lstrip(".")
    return None, None


def read_sections(path: str, text: str, kind: str) -> tuple[str, list[Section]]:
    """Parse `text` (the decoded file at `path`) into sections; returns (kind, sections).

    Raises:
        ReadError: the text is not valid for its kind (e.g. a notebook that is not JSON).
    """
    if kind == "markdown":
        return kind, markdown_sections(text.splitlines())
    if kind == "rst":
        return kind, rst_sections(text.splitlines())
    if kind == "html":
        return kind, html_sections(text)
    if kind == "notebook":
        return kind, notebook_sections(text)
    if kind == "python":
        return kind, python_sections(path, text)
    if kind == "config":
        spec = openapi_sections(path, text)
        return ("spec", spec) if spec is not None else (kind, whole_file(path, text, ""))
    if kind == "code":
        lang = classify(path)[1] or ""
        return kind, whole_file(path, text, lang if lang in CODE_EXT.values() else "")
    return kind, whole_file(path, text, "")


def whole_file(path: str, text: str, split_language: str) -> list[Section]:
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        return []
    return [Section((path,), text.strip("\n"), 1, max(1, len(lines)), split_language=split_language)]


# --- Markdown --------------------------------------------------------------------------------
# A `---` under a table row is a rule, not a setext heading; CommonMark, the parser's dialect, has no tables.
_TABLE_ROW = re.compile(r"^\s*\|")


def markdown_sections(lines: list[str], line_map: list[int] | None = None) -> list[Section]:
    """Sections at every ATX or setext heading outside lists and block quotes, fenced code respected.

    `line_map[i]` is the source line of `lines[i]` (for documents assembled from other formats).
    """
    src = line_map or list(range(1, len(lines) + 1))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start = _front_matter_end(lines)
    body_start = start

    def flush(end: int) -> None:
        chunk = lines[body_start:end]
        if any(line.strip() for line in chunk):
            first = next(i for i in range(body_start, end) if lines[i].strip())
            last = max(i for i in range(body_start, end) if lines[i].strip())
            sections.append(Section(tuple(h for _, h in stack), "\n".join(lines[first:last + 1]),
                                    src[first], src[last], split_language="markdown"))

    # the parser's line numbers must be indices into `lines`: it reads a CR as a line break too, and a line
    # may hold one (from an HTML <pre>)
    for heading in parse_document("\n".join(lines[start:]).replace("\r", " ")).headings:
        at = start + heading.start
        # a heading inside a list item or block quote belongs to it: a section starting there would cut it
        if heading.nested or (heading.setext and _TABLE_ROW.match(lines[at])):
            continue
        flush(at)
        while stack and stack[-1][0] >= heading.level:
            stack.pop()
        stack.append((heading.level, _plain(" ".join(heading.title.split("\n")))))
        body_start = at
    flush(len(lines))
    return sections


def _front_matter_end(lines: list[str]) -> int:
    """The first line after YAML front matter (metadata, not prose), 0 when there is none."""
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() in {"---", "..."}:
                return i + 1
    return 0


def _plain(title: str) -> str:
    """Heading text without inline markup: `code`, **bold**, [links](url)."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    return re.sub(r"[`*_]", "", title).strip()


# --- reStructuredText ------------------------------------------------------------------------
_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def rst_sections(lines: list[str]) -> list[Section]:
    """Sections at reST titles (underlined, optionally overlined); levels by order of first use."""
    styles: list[tuple[str, bool]] = []
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body_start = 0

    def flush(end: int) -> None:
        idx = [i for i in range(body_start, end) if lines[i].strip()]
        if idx:
            sections.append(Section(tuple(h for _, h in stack), "\n".join(lines[idx[0]:idx[-1] + 1]),
                                    idx[0] + 1, idx[-1] + 1, split_language="rst"))

    i = 0
    while i < len(lines):
        title_at = None
        if i + 1 < len(lines) and lines[i].strip() and not _ADORN.match(lines[i]):
            under = _ADORN.match(lines[i + 1])
            if under and len(lines[i + 1].rstrip()) >= len(lines[i].rstrip()) and not lines[i].startswith(" "):
                over = i > 0 and lines[i - 1].strip() == lines[i + 1].strip()
                title_at = (i - 1 if over else i, i + 1, (under.group(1), over))
        if title_at:
            first, last, style = title_at
            flush(first)
            if style not in styles:
                styles.append(style)
            level = styles.index(style) + 1
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, lines[i].strip()))
            body_start = first
            i = last + 1
            continue
        i += 1
    flush(len(lines))
    return sections


# --- HTML ------------------------------------------------------------------------------------
class _HTMLText(HTMLParser):
    """Visible text of an HTML page as Markdown-like lines, each with its source line."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "section", "article", "li", "tr", "br", "pre", "table", "ul", "ol",
             "blockquote", "dd", "dt", "header", "footer", "main", "nav", "aside", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.src: list[int] = []
        self._buf: list[str] = []
        self._buf_line = 1
        self._skip = 0
        self._pre = 0

    def _newline(self) -> None:
        text = "".join(self._buf)
        for k, part in enumerate(text.split("\n") if self._pre else [re.sub(r"\s+", " ", text).strip()]):
            if part.strip() or self._pre:
                self.lines.append(part)
                self.src.append(self._buf_line + (k if self._pre else 0))
        self._buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self._newline()
            if tag[0] == "h" and tag[1:].isdigit():
                self._buf = ["#" * int(tag[1]) + " "]
                self._buf_line = self.getpos()[0]
            if tag == "pre":
                self._pre += 1
                self.lines.append("```")
                self.src.append(self.getpos()[0])

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self._newline()
            if tag == "pre" and self._pre:
                self._pre -= 1
                self.lines.append("```")
                self.src.append(self.getpos()[0])

    def handle_data(self, data):
        if self._skip:
            return
        if not self._buf or not "".join(self._buf).strip("# "):
            self._buf_line = self.getpos()[0]
        self._buf.append(data)

    def close(self):
        super().close()
        self._newline()


def html_sections(text: str) -> list[Section]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    sections = markdown_sections(parser.lines, parser.src)
    for s in sections:
        s.split_language = "markdown"
    return sections


# --- Jupyter notebooks -----------------------------------------------------------------------
def notebook_sections(text: str) -> list[Section]:
    """Markdown cells give headings; code cells become fenced blocks. Line ranges count cells."""
    try:
        nb = json.loads(text)
        cells = nb["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReadError(f"not a Jupyter notebook (nbformat 4 JSON with 'cells'): {exc}") from None
    lines: list[str] = []
    cell_of: list[int] = []
    lang = (nb.get("metadata", {}).get("language_info", {}) or {}).get("name", "python")
    for n, cell in enumerate(cells, start=1):
        source = cell.get("source", "")
        body = "".join(source) if isinstance(source, list) else str(source)
        if not body.strip():
            continue
        if cell.get("cell_type") == "code":
            block = [f"```{lang}", *body.splitlines(), "```"]
        elif cell.get("cell_type") == "markdown":
            block = body.splitlines()
        else:
            continue
        lines += block + [""]
        cell_of += [n] * (len(block) + 1)
    return markdown_sections(lines, cell_of)


# --- OpenAPI / Swagger -----------------------------------------------------------------------
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def openapi_sections(path: str, text: str) -> list[Section] | None:
    """One section per operation and per schema; None when the file is not an OpenAPI/Swagger spec."""
    try:
        doc = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict) or not ("openapi" in doc or "swagger" in doc):
        return None
    info = doc.get("info") or {}
    title = str(info.get("title") or path)
    lines = text.splitlines()
    sections = []
    head = [f"{title} (version {info.get('version', '?')})", str(info.get("description") or "").strip()]
    servers = [s.get("url") for s in doc.get("servers") or [] if isinstance(s, dict)]
    if servers:
        head.append("Servers: " + ", ".join(map(str, servers)))
    sections.append(Section((title,), "\n\n".join(h for h in head if h), 1, _line_of(lines, "paths", 1) - 1 or 1))
    for route, ops in (doc.get("paths") or {}).items():
        if not isinstance(ops, dict):
            continue
        route_line = _line_of(lines, route, 1)
        for method in _METHODS:
            op = ops.get(method)
            if not isinstance(op, dict):
                continue
            start = _line_of(lines, method, route_line)
            body = [f"{method.upper()} {route}" + (f" — {op['summary']}" if op.get("summary") else "")]
            if op.get("operationId"):
                body.append(f"operationId: {op['operationId']}")
            if op.get("description"):
                body.append(str(op["description"]).strip())
            params = (ops.get("parameters") or []) + (op.get("parameters") or [])
            if params:
                body.append("Parameters:\n" + "\n".join(_describe_param(p) for p in params if isinstance(p, dict)))
            if isinstance(op.get("requestBody"), dict):
                body.append("Request body: " + _compact(op["requestBody"]))
            if isinstance(op.get("responses"), dict):
                body.append("Responses:\n" + "\n".join(
                    f"- {code}: {(r or {}).get('description', '') if isinstance(r, dict) else r}"
                    for code, r in op["responses"].items()))
            sections.append(Section((title, f"{method.upper()} {route}"), "\n\n".join(body), start,
                                    _block_end(lines, start), symbol=op.get("operationId")))
    schemas = ((doc.get("components") or {}).get("schemas") or doc.get("definitions") or {})
    for name, schema in schemas.items():
        start = _line_of(lines, name, 1)
        sections.append(Section((title, "schemas", name), f"Schema {name}:\n{_compact(schema)}", start,
                                _block_end(lines, start), symbol=name))
    return sections


def _describe_param(p: dict) -> str:
    schema = p.get("schema") or {}
    kind = schema.get("type", p.get("type", "")) if isinstance(schema, dict) else ""
    req = "required" if p.get("required") else "optional"
    return f"- {p.get('name')} ({p.get('in')}, {kind}, {req}): {str(p.get('description', '')).strip()}"


def _compact(obj) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100).strip()


def _line_of(lines: list[str], key: str, after: int) -> int:
    """1-based line of the first `key:` (quoted or not) at or after line `after`; `after` if absent."""
    pat = re.compile(r"^\s*[\"']?" + re.escape(str(key)) + r"[\"']?\s*:")
    for i in range(after - 1, len(lines)):
        if pat.match(lines[i]):
            return i + 1
    return after


def _block_end(lines: list[str], start: int) -> int:
    """Last line of the indented block that begins at 1-based `start`."""
    indent = len(lines[start - 1]) - len(lines[start - 1].lstrip())
    end = start
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip() and len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith(("}", "]")):
            break
        if line.strip():
            end = i + 1
    return end


# --- Python ----------------------------------------------------------------------------------
def python_sections(path: str, text: str) -> list[Section]:
    """Module docstring, module-level constants, and each function and class with its source.

    Classes carry their header and each method as `parts`, used when the class is too long.
    A file that does not parse falls back to language-aware splitting of the whole file.
    """
    try:
        tree = _parse_without_gc(text)
    except (SyntaxError, ValueError):
        return whole_file(path, text, "python")
    lines = text.splitlines()
    module = _module_name(path)
    sections: list[Section] = []

    def seg(node: ast.AST) -> tuple[int, int, str]:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        last = node.end_lineno or node.lineno
        return first, last, "\n".join(lines[first - 1:last])

    doc = ast.get_docstring(tree)
    if doc:
        first_node = tree.body[0]
        sections.append(Section((module,), f'"""{doc}"""', first_node.lineno, first_node.end_lineno or 1,
                                symbol=module, split_language="python"))
    loose: list[ast.stmt] = []

    def flush_loose() -> None:
        # top-level constants and assignments; bare import runs teach nothing about the API
        meaningful = [n for n in loose if not isinstance(n, (ast.Import, ast.ImportFrom))
                      and not (isinstance(n, ast.Expr) and isinstance(getattr(n, "value", None), ast.Constant))]
        if meaningful:
            first, last = meaningful[0].lineno, meaningful[-1].end_lineno or meaningful[-1].lineno
            sections.append(Section((module, "<module>"), "\n".join(lines[first - 1:last]), first, last,
                                    split_language="python"))
        loose.clear()

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            flush_loose()
            first, last, src = seg(node)
            section = Section((module, node.name), src, first, last, symbol=node.name, split_language="python")
            if isinstance(node, ast.ClassDef):
                section.parts = _class_parts(module, node, lines, seg)
            sections.append(section)
        elif not (node is tree.body[0] and doc):
            loose.append(node)
    flush_loose()
    return sections


def _parse_without_gc(text: str) -> ast.Module:
    """ast.parse with the cycle collector paused: an AST has no reference cycles, but its many new
    objects trigger collections that walk everything the process holds (half the parse time here)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if enabled:
            gc.enable()


def _class_parts(module: str, node: ast.ClassDef, lines: list[str], seg) -> list[Section]:
    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    parts = []
    first, _, _ = seg(node)
    header_end = (seg(methods[0])[0] - 1) if methods else (node.end_lineno or node.lineno)
    parts.append(Section((module, node.name), "\n".join(lines[first - 1:header_end]).rstrip(), first, header_end,
                         symbol=node.name, split_language="python"))
    for m in methods:
        mf, ml, msrc = seg(m)
        # the class line keeps the method's context when the piece is read alone
        parts.append(Section((module, node.name, m.name), f"class {node.name}:\n{msrc}", mf, ml,
                             symbol=f"{node.name}.{m.name}", split_language="python"))
    return parts


def _module_name(path: str) -> str:
    p = PurePosixPath(path)
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1] or [p.parent.name or "__init__"]
    for prefix in ("src", "lib"):
        if len(parts) > 1 and parts[0] == prefix:
            parts = parts[1:]
    return ".".join(parts) or p.stem
