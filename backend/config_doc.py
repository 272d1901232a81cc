"""The README's config reference, rendered from the configs' field docstrings, defaults and flags.

    python -m backend.config_doc          # rewrite the tables between the markers in README.md
    python -m backend.config_doc --check  # exit 1 when README.md differs from the rendering

A nested section that is a stage config of its own (`endpoint`) is a row pointing to its table; other nested
sections (`chunk`, `model`, `lora`, ...) are rows with dotted names.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields

from backend.config import REPO_ROOT
from backend.config_base import BOUNDS, FLAG, default_of, field_docs, module_path, nested_sections
from backend.curate_config import CurateConfig
from backend.endpoint_config import EndpointConfig
from backend.eval_config import EvalConfig
from backend.export_config import ExportConfig
from backend.ingest_config import IngestConfig
from backend.synth_config import SynthConfig
from backend.train_config import TrainConfig

CONFIGS = (IngestConfig, SynthConfig, EndpointConfig, CurateConfig, TrainConfig, EvalConfig, ExportConfig)
README = REPO_ROOT / "README.md"
START = "<!-- config-reference: start (rendered by `python -m backend.config_doc`; edit the docstrings) -->"
END = "<!-- config-reference: end -->"


def render() -> str:
    """Every config's table, in pipeline order."""
    return "\n\n".join(_table(cls) for cls in CONFIGS)


def _table(cls: type) -> str:
    intro = " ".join((cls.__doc__ or "").split())
    lines = [f"### {cls.section}: `{cls.__name__}` (`{module_path(cls)}`)", "", intro, "",
             "| setting | default | range | CLI | meaning |", "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {default} | {bounds} | {flag} | {meaning} |"
              for name, default, bounds, flag, meaning in _rows(cls, "")]
    return "\n".join(lines)


def _rows(cls: type, prefix: str):
    """(dotted name, default as JSON, bounds, flag, meaning) of each field; a nested section is a row, then its own
    rows or a reference to its table."""
    docs, nested = field_docs(cls), nested_sections(cls)
    for f in fields(cls):
        name, meaning = prefix + f.name, " ".join(docs.get(f.name, "").split()).replace("|", "\\|")
        section = nested.get(f.name)
        if section is None:
            flag = f.metadata.get(FLAG)
            default = json.dumps(_relative(default_of(f)), ensure_ascii=False)
            yield name, f"`{default}`", _bounds(f.metadata), f"`{flag}`" if flag else "", meaning
        elif section in CONFIGS:
            yield name, "", "", "", f"{meaning} See the `{section.__name__}` table."
        else:
            yield name, "", "", "", meaning
            yield from _rows(section, name + ".")


def _bounds(metadata) -> str:
    """A field's bounds as `1 ≤ x ≤ 10_000`, `0 < x ≤ 3600`, `x ≥ 0`; empty without any."""
    b = {k: (f"{v:_}" if isinstance(v, int) else repr(v)) for k, v in metadata.items() if k in BOUNDS}
    if not b:
        return ""
    low = f"{b['min']} ≤ " if "min" in b else f"{b['above']} < " if "above" in b else ""
    high = f" ≤ {b['max']}" if "max" in b else f" < {b['below']}" if "below" in b else ""
    return f"{low}x{high}"


def _relative(value):
    """A default path inside the checkout as a path from its root (the same on every machine)."""
    if isinstance(value, str) and value.startswith(f"{REPO_ROOT}/"):
        return value[len(str(REPO_ROOT)) + 1:]
    return value


def rewrite(text: str) -> str:
    """`text` (the README) with the rendering between its markers.

    Raises:
        ValueError: the markers are missing.
    """
    if START not in text or END not in text:
        raise ValueError(f"README.md needs the lines {START!r} and {END!r} around the config tables")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = README.read_text(encoding="utf-8")
    wanted = rewrite(text)
    if "--check" in argv:
        if wanted != text:
            print("README.md's config reference differs from the configs; run `python -m backend.config_doc`",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
