"""One pattern for every stage's settings: a dataclass on `Config`, whose field docstrings are its documentation.

Each stage has a `backend/<stage>_config.py`:

    @dataclass
    class CurateConfig(Config):
        section = "curate"

        num_perm: int = 64
        \"\"\"MinHash permutations. More: fewer missed near-duplicates, slower.\"\"\"

        def own_problems(self) -> list[str]:
            return [...]  # this class's checks, each with its fix

`problems()` adds the problems of nested sections (fields whose type is another `Config`), `validate()` raises
them all at once, `from_file` / `from_dict` read YAML (every unknown key is reported, with where the fields are
documented), `field_docs` reads the docstrings (litgpt's `args.py` style), and `add_config_flags` turns fields
into argparse flags whose help is that docstring. Only the standard library is imported (yaml when a file is
read), so `doctune --help` stays fast.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
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


class ConfigError(ValueError):
    """A config with one or more problems; the message lists each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class Config:
    """The base of every stage's config dataclass."""

    section: ClassVar[str] = ""
    """The stage's YAML section (`synth`, `train`, ...); a nested section is named by its field instead."""

    def own_problems(self) -> list[str]:
        """This config's own checks, each with its fix (nested sections report theirs through `problems`)."""
        return []

    def below_one(self, where: str, *names: str) -> list[str]:
        """A problem for each named whole-number field below 1 (`where` is its section in the messages)."""
        return [f"{where}.{name}={getattr(self, name)} must be at least 1" for name in names if getattr(self, name) < 1]

    def problems(self) -> list[str]:
        """Every problem of this config and of its nested sections; empty: it is valid."""
        out = self.own_problems()
        for name in nested_sections(type(self)):
            out += getattr(self, name).problems()
        return out

    def validate(self):
        """This config, when valid.

        Raises:
            ConfigError: listing every problem at once, each with its fix.
        """
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
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
            ConfigError: unknown keys (named with the file), or sections that are not mappings.
        """
        import yaml

        return cls.from_dict(cls.section_of(yaml.safe_load(Path(path).read_text())), str(path))

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
        nested = nested_sections(cls)
        values = {}
        for key in (k for k in data if k in known):  # in the file's order, so problems are listed in it
            values[key] = data[key]
            if key in nested:
                values[key] = nested[key]._overlay(data[key], getattr(base, key), source,
                                                   f"{where}.{key}" if where else key, problems)
        return replace(base, **values)


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
