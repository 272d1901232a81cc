"""The CLI's flags are the configs' fields: every field that names a flag has it on a `doctune` command, and
the help of each flag built from a field is that field's docstring (so the CLI, the README's config reference
and the code cannot drift apart)."""

from __future__ import annotations

import argparse

from backend.config_base import config_field, field_docs, flag_fields
from backend.config_doc import CONFIGS
from actors.cli import _parser


OWN_HELP = {"--preset"}  # `train --preset` picks the preset file a config starts from, a step before the field


def options() -> dict[str, list[argparse.Action]]:
    """Every option string of every `doctune` subcommand (nested ones too) -> its actions."""
    out: dict[str, list[argparse.Action]] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            for flag in action.option_strings:
                out.setdefault(flag, []).append(action)

    walk(_parser())
    return out


def test_every_flag_a_config_field_names_is_on_a_command_with_the_field_docstring_as_help():
    found = options()
    missing, wrong_help = [], []
    for cls in CONFIGS:
        for path in flag_fields(cls):
            owner, f = config_field(cls, path)
            flag = f.metadata["flag"]
            if flag not in found:
                missing.append(f"{cls.__name__}.{path} ({flag})")
                continue
            doc = " ".join(field_docs(owner).get(f.name, "").split()).replace("%", "%%")
            # the same flag may mean something else on another command (`runs --limit`): one must be the field's
            if flag not in OWN_HELP and not any((a.help or "").startswith(doc) for a in found[flag]):
                wrong_help.append(f"{cls.__name__}.{path} ({flag}): {[a.help for a in found[flag]]}")
    assert not missing, f"config fields whose flag no command has: {missing}"
    assert not wrong_help, wrong_help


def test_flags_set_the_config_fields_they_name():
    from actors.cli.corpus import INGEST_FLAGS, _ingest_config
    from actors.cli.data import SYNTH_FLAGS, _synth_config

    p = _parser()
    args = p.parse_args(["ingest", "repo", "--project", "p", "--max-tokens", "300", "--exclude", "a/**",
                         "--exclude", "b/**", "--no-gitignore"])
    cfg = _ingest_config(args)
    assert (cfg.chunk.max_tokens, cfg.exclude, cfg.respect_gitignore) == (300, ["a/**", "b/**"], False)
    assert cfg.chunk.overlap_tokens == 64  # not given: the default stays
    args = p.parse_args(["synth", "--project", "p", "--base-url", "http://127.0.0.1:9/v1", "--rpm", "60"])
    cfg = _synth_config(args)
    assert (cfg.generator, cfg.endpoint.base_url, cfg.endpoint.rpm) == ("openai", "http://127.0.0.1:9/v1", 60)
    assert len(INGEST_FLAGS) == 7 and "endpoint.rpm" in SYNTH_FLAGS
