"""One pattern for every stage's settings: a dataclass on `Config`, whose field docstrings are its documentation.

Each stage has a `backend/<stage>_config.py`:

    @dataclass
    class CurateConfig(Config):
        section = "curate"

        num_perm: int = field(default=64, metadata={"min": 8, "max": 1024})
        \"\"\"MinHash permutations. More: fewer missed near-duplicates, slower.\"\"\"

        def own_problems(self) -> list[str]:
            return [...]  # this class's checks, each with its fix

`problems()` checks every field against its type hint (`int` takes a whole number, not `true`; `float` takes an
int too; `X | None`, `list[...]`, `dict[str, float]`) and its bounds (field metadata `{"min": 1, "max": 10_000}`;
`above` / `below` for open ends), then the class's `own_problems` (what one field cannot say alone), then the
problems of nested sections (fields whose type is another `Config`); `validate()` raises them all at once.
`from_file` / `from_dict` read YAML and report, each with the file: syntax errors (line and column), a document or
section that is not a mapping, every unknown key (with where the fields are documented), every value of the wrong
type or out of its bounds. `field_docs` reads the docstrings (litgpt's `args.py` style), and `add_config_flags`
turns fields into argparse flags whose help is that docstring. Only the standard library is imported (yaml when a
file is read), so `doctune --help` stays fast.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import json
import operator
import textwrap
import types
import typing
from dataclasses import MISSING, Field, asdict, fields, replace
from pathlib import Path
from typing import ClassVar

STAGES = ("ingest", "synth", "curate", "train", "eval", "export")
"""The stage sections; one YAML file may hold several (`synth:`, `curate:`, ...), each stage reads its own."""
FLAG = "flag"
"""The field metadata key naming a field's command-line flag: `field(default=600, metadata={FLAG: "--rpm"})`."""
CHOICES = "choices"
"""The field metadata key listing the values a flag accepts."""
BOUNDS = ("min", "above", "max", "below")
"""The field metadata keys of a number's bounds: `min` / `max` inclusive, `above` / `below` exclusive
(`field(default=16, metadata={"min": 1, "max": 10_000})`). `validate` and `from_dict` check them."""


class ConfigError(ValueError):
    """A config with one or more problems; the message lists each with its fix (and `source`, where they came
    from, when the problems do not name it themselves)."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        where = f" ({source})" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  - {p}" for p in problems))


class Config:
    """The base of every stage's config dataclass."""

    section: ClassVar[str] = ""
    """The stage's YAML section (`synth`, `train`, ...); a nested section is named by its field instead."""

    def own_problems(self) -> list[str]:
        """This config's own checks, each with its fix (nested sections report theirs through `problems`)."""
        return []

    def problems(self, where: str | None = None) -> list[str]:
        """Every problem of this config and of its nested sections; empty: it is valid. `where` names this
        config in the messages (default: its section; a nested section is named by its field)."""
        where = self.section if where is None else where
        hints, nested = type_hints(type(self)), nested_sections(type(self))
        out = [p for f in fields(self) if f.name not in nested
               if (p := field_problem(f, hints[f.name], getattr(self, f.name), f"{where}.{f.name}"))]
        wrong_type = [f.name for f in fields(self) if f.name not in nested
                      and type_mismatch(getattr(self, f.name), hints[f.name])]
        if not wrong_type:  # own checks compare values, which needs the right types
            out += self.own_problems()
        for name, cls in nested.items():
            section = getattr(self, name)
            if isinstance(section, cls):
                out += section.problems(name)
            else:
                out.append(f"{name} must be a mapping of settings ({cls.__name__}), got {type(section).__name__}")
        return out

    def validate(self, source: str | None = None):
        """This config, when valid.

        Args:
            source: where its settings came from (`synth.yaml and the command line`), for the message.

        Raises:
            ConfigError: listing every problem at once, each with its fix.
        """
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source)
        return self

    def to_dict(self) -> dict:
        """Plain data (nested sections as mappings) that `from_dict` reads back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config", base: Config | None = None):
        """`base` (default: the defaults) with the keys of `data` replaced; nested sections are partial overlays.

        Raises:
            ConfigError: every unknown key, and every section that is not a mapping, at once.
        """
        problems: list[str] = []
        cfg = cls._overlay(data, base if base is not None else cls(), source, cls.section, problems)
        if problems:
            raise ConfigError(problems)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path):
        """A YAML file of this stage's keys, or of stage sections (`synth:`, `curate:`, ...) of which this one is read.

        Raises:
            ConfigError: the file cannot be read or parsed, or has unknown keys, sections that are not mappings,
                values of the wrong type or out of bounds (each named with the file).
        """
        return cls.from_dict(cls.section_of(read_yaml(path)), str(path))

    @classmethod
    def section_of(cls, data):
        """This stage's part of a YAML document: its section; nothing when the document holds only other stages'
        sections; else the whole document."""
        if isinstance(data, dict):
            if cls.section in data:
                return data[cls.section]
            if data and set(data) <= set(STAGES):
                return {}
        return data

    @classmethod
    def _overlay(cls, data, base: Config, source: str, where: str, problems: list[str]):
        data = {} if data is None else data  # an empty section in YAML
        if not isinstance(data, dict):
            problems.append(f"{source}: `{where}` must be a mapping of settings, got {type(data).__name__}")
            return base
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            problems.append(f"{source}: unknown {where or cls.__name__} setting(s) {unknown}; known: "
                            f"{', '.join(known)} (documented on {cls.__name__} in "
                            f"{module_path(cls)} and in the README's Config reference)")
        nested, hints, by_name = nested_sections(cls), type_hints(cls), {f.name: f for f in fields(cls)}
        values = {}
        for key in (k for k in data if k in known):  # in the file's order, so problems are listed in it
            path = f"{where}.{key}" if where else key
            values[key] = data[key]
            if key in nested:
                values[key] = nested[key]._overlay(data[key], getattr(base, key), source, path, problems)
            elif problem := field_problem(by_name[key], hints[key], data[key], path):
                problems.append(f"{source}: {problem}")
        return replace(base, **values)


def read_yaml(path: str | Path):
    """The YAML document of a config file.

    Raises:
        ConfigError: the file is missing or unreadable, is not UTF-8, or is not valid YAML (with the line and
            column of the problem), or holds something other than a mapping of settings.
    """
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file; pass the path of a YAML file of settings (see the "
                           f"README's Config reference)"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder; pass the path of a YAML file of settings"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror}); check its permissions"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        at, what = "", " ".join(str(exc).split())
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:  # scanner and parser errors
            at, what = f":{exc.problem_mark.line + 1}:{exc.problem_mark.column + 1}", exc.problem or what
        raise ConfigError([f"{path}{at}: invalid YAML: {what}; fix the file there (settings are `key: value` "
                           f"lines, sections indented under `synth:`, `train:`, ...)"]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"{path}: holds {_yaml_kind(data)}, not a mapping of settings; write `key: value` "
                           f"lines (e.g. `synth:` then `  concurrency: 8`)"])
    return data


def field_problem(f: Field, hint, value, path: str) -> str | None:
    """What is wrong with `value` for field `f` (its type hint `hint`, its bounds), with the fix; None: nothing.
    `path` names the field in the message (`synth.endpoint.rpm`)."""
    mismatch = type_mismatch(value, hint)
    if mismatch is not None:
        at, bad, expected = mismatch
        hint_yaml = ""
        if expected.startswith("a number") and isinstance(bad, str) and _is_number(bad):
            hint_yaml = f" (YAML reads {bad} as text: write it with a dot, e.g. 1.0e-4, or as a plain number)"
        return (f"{path}{at}={_shown(bad)} is {_yaml_kind(bad)}; it must be {expected}{hint_yaml} "
                f"(default {_example(f)})")
    bounds = {k: f.metadata[k] for k in BOUNDS if k in f.metadata}
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool) and not within(value, bounds):
        flag = f"; flag {f.metadata[FLAG]}" if f.metadata.get(FLAG) else ""
        return f"{path}={_shown(value)} must be {describe_bounds(bounds)} (default {_example(f)}{flag})"
    return None


def within(value: float, bounds: dict) -> bool:
    """Whether `value` keeps the bounds (`min`, `above`, `max`, `below`)."""
    return all(_KEEPS[key](value, bound) for key, bound in bounds.items())


_KEEPS = {"min": operator.ge, "above": operator.gt, "max": operator.le, "below": operator.lt}


def describe_bounds(bounds: dict) -> str:
    """`at least 1 and at most 10000`, `above 0 and at most 3600`, ... in words."""
    words = {"min": "at least", "above": "above", "max": "at most", "below": "below"}
    return " and ".join(f"{words[k]} {bounds[k]}" for k in BOUNDS if k in bounds)


def type_mismatch(value, hint) -> tuple[str, object, str] | None:
    """Where `value` does not fit the type hint: (the path inside it, e.g. `['qa']`, the value there, the type
    expected in words); None when it fits. A hint this cannot read (a nested config, a class) fits anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if any(type_mismatch(value, a) is None for a in args):
            return None
        inner = [type_mismatch(value, a) for a in args if a is not type(None)]
        if value is not None and len(inner) == 1 and inner[0][0]:  # inside a list or mapping: the exact place
            return inner[0]
        return "", value, type_words(hint)
    if origin is list:
        if not isinstance(value, list):
            return "", value, type_words(hint)
        for i, item in enumerate(value):
            if m := type_mismatch(item, args[0]):
                return f"[{i}]{m[0]}", m[1], m[2]
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return "", value, type_words(hint)
        for k, v in value.items():
            if m := type_mismatch(k, args[0]):
                return f" key {k!r}", k, m[2]
            if m := type_mismatch(v, args[1]):
                return f"[{k!r}]{m[0]}", m[1], m[2]
        return None
    fits = {bool: lambda v: isinstance(v, bool),
            int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            str: lambda v: isinstance(v, str),
            type(None): lambda v: v is None}.get(hint)
    return None if fits is None or fits(value) else ("", value, type_words(hint))


def type_words(hint) -> str:
    """A type hint in words: `int | None` → `a whole number, or null`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        named = [type_words(a) for a in args if a is not type(None)]
        return " or ".join(named) + (", or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_plural(args[0])}"
    if origin is dict:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
    return _WORDS.get(hint, str(hint))


def _plural(hint) -> str:
    """`a mapping of text to numbers` → `mappings of text to numbers`."""
    words = type_words(hint)
    special = {"a whole number": "whole numbers", "a number": "numbers", "true or false": "true/false values"}
    if words in special or not words.startswith("a "):
        return special.get(words, words)
    first, _, rest = words[2:].partition(" ")
    return f"{first}s {rest}".strip()


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null",
          list: "a list", dict: "a mapping"}


def _yaml_kind(value) -> str:
    """What YAML made of a value, in its own words."""
    return _WORDS.get(type(value), type(value).__name__)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _example(f: Field) -> str:
    """A field's default as YAML/JSON writes it: the example every message gives."""
    return _shown(default_of(f))


def _shown(value) -> str:
    """A value as YAML/JSON writes it (`true`, `null`, `"abc"`), cut to 60 characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def type_hints(cls: type) -> dict[str, object]:
    """A dataclass's field types, resolved from their annotations."""
    return typing.get_type_hints(cls)


@functools.cache
def nested_sections(cls: type) -> dict[str, type[Config]]:
    """Field name → config class, for the fields that are nested config sections."""
    return {f.name: t for f in fields(cls) if isinstance(t := type_hints(cls)[f.name], type) and issubclass(t, Config)}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal right after its annotation in the class body (base classes too)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is Config:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, after in zip(body, body[1:]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr) \
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def module_path(cls: type) -> str:
    """Where a class is defined, from the repository root: `backend/synth_config.py`."""
    return cls.__module__.replace(".", "/") + ".py"


def config_field(cls: type, path: str) -> tuple[type, Field]:
    """(the class that holds it, the field) for a dotted field path such as `endpoint.rpm`."""
    *sections, name = path.split(".")
    for section in sections:
        cls = nested_sections(cls)[section]
    return cls, next(f for f in fields(cls) if f.name == name)


def set_field(cfg: Config, path: str, value) -> None:
    """Set a dotted field path (`endpoint.rpm`) of a config in place."""
    *sections, name = path.split(".")
    for section in sections:
        cfg = getattr(cfg, section)
    setattr(cfg, name, value)


def default_of(f: Field):
    """A field's default value (built fresh from its factory)."""
    return f.default_factory() if f.default is MISSING else f.default


def flag_fields(cls: type, prefix: str = "") -> list[str]:
    """The dotted names of the fields of `cls` (nested sections' included) that have a command-line flag."""
    nested = nested_sections(cls)
    out = []
    for f in fields(cls):
        if f.name in nested:
            out += flag_fields(nested[f.name], f"{prefix}{f.name}.")
        elif f.metadata.get(FLAG):
            out.append(prefix + f.name)
    return out


def add_config_flags(parser: argparse.ArgumentParser, cls: type, names: list[str]) -> None:
    """Add the flag of each named field (a dotted path for a nested section: `endpoint.rpm`) to `parser`.

    The help is the field's docstring; the destination is the path itself, and every flag defaults to None
    (not given), so `apply_config_flags` changes only what was typed. A bool field whose flag starts with
    `--no-` turns it off; any other bool gets `--flag` / `--no-flag`; a list field's flag repeats.

    Raises:
        ValueError: a named field has no flag in its metadata, or a type no flag can carry (a mapping).
    """
    for path in names:
        owner, f = config_field(cls, path)
        flag = f.metadata.get(FLAG)
        if not flag:
            raise ValueError(f"{owner.__name__}.{f.name} has no command-line flag in its metadata")
        default = default_of(f)
        doc = field_docs(owner).get(f.name, "")
        help_text = (" ".join(doc.split()) + f" (default: {default})").replace("%", "%%")
        kind = _flag_type(type_hints(owner)[f.name])
        common = dict(dest=path, default=None, help=help_text)
        if kind is bool and flag.startswith("--no-"):
            parser.add_argument(flag, action="store_const", const=False, **common)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind is list:
            parser.add_argument(flag, action="append", metavar=f.name.upper(), **common)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, choices=f.metadata.get(CHOICES), **common)
        else:
            raise ValueError(f"{owner.__name__}.{f.name} ({kind}) cannot be set from the command line")


def apply_config_flags(cfg: Config, args: argparse.Namespace, names: list[str]) -> Config:
    """`cfg` with the flags of `names` (added by `add_config_flags`) that were given on the command line."""
    for path in names:
        value = getattr(args, path, None)
        if value is not None:
            set_field(cfg, path, value)
    return cfg


def _flag_type(hint) -> type | None:
    """What a flag parses for a field type: `int | None` → int, `list[str]` → list, `dict[...]` → dict (none can)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return origin
    if args and origin is not None:  # an optional type: its one other member
        return _flag_type(args[0])
    return hint if hint in (bool, int, float, str) else None
