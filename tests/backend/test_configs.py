"""Every stage's config on the one base: problems of nested sections, YAML files (unknown keys named with the file),
round trips, field docstrings, command-line flags; the synthesis fingerprint across the `endpoint:` section."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields, replace

import pytest
import yaml

from backend.config import REPO_ROOT
from backend.config_base import (ConfigError, add_config_flags, apply_config_flags, field_docs, flag_fields,
                                 nested_sections)
from backend.config_doc import CONFIGS
from backend.curate_config import CurateConfig
from backend.endpoint_config import EndpointConfig
from backend.eval_config import EvalConfig
from backend.export_config import ExportConfig
from backend.ingest_config import ChunkConfig, IngestConfig
from backend.synth_config import SynthConfig
from backend.train_config import PRESETS_DIR, TrainConfig, load_preset

CHANGED = {
    IngestConfig: {"exclude": ["tests/**"], "respect_gitignore": False, "chunk": {"max_tokens": 256}},
    SynthConfig: {"generator": "openai", "task_mix": {"qa": 1.0}, "max_chunks": 5,
                  "endpoint": {"model": "m", "rpm": 5, "prices": {"m": {"input": 1.0, "output": 2.0}}}},
    EndpointConfig: {"base_url": "http://127.0.0.1:8000/v1", "json_mode": False, "backoff_max_s": 5.0},
    CurateConfig: {"judge_threshold": 4.0, "splits": {"train": 0.9, "test": 0.1}},
    TrainConfig: {"engine": "hf", "lora": {"r": 8}, "data": {"tasks": ["facts"]}, "training": {"max_steps": 3}},
    EvalConfig: {"limits": {"probe": 5}, "judge": True, "endpoint": {"model": "judge-model"}},
    ExportConfig: {"format": "sharegpt", "out": "exported", "splits": ["train"]},
}
"""A valid, non-default setting of every stage config, partial sections included."""


def all_config_classes() -> list[type]:
    """The stage configs and every section nested in them."""
    found = list(CONFIGS)
    for cls in found:
        found += [c for c in nested_sections(cls).values() if c not in found]
    return found


# --- problems -------------------------------------------------------------------------------------

def test_problems_are_collected_from_nested_sections_and_raised_once():
    cfg = SynthConfig(tasks_per_chunk=0, endpoint=EndpointConfig(rpm=0, request_timeout_s=0))
    problems = cfg.problems()
    assert problems == ["synth.tasks_per_chunk=0 must be at least 1", "endpoint.rpm=0 must be at least 1",
                        "endpoint.request_timeout_s must be positive"]
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.problems == problems
    ingest = IngestConfig(batch_bytes=0, chunk=ChunkConfig(min_tokens=-1)).problems()
    assert [p.split("=")[0] for p in ingest] == ["ingest.batch_bytes", "chunk.min_tokens"]
    assert len(EvalConfig(batch_size=0, endpoint=EndpointConfig(max_attempts=0)).problems()) == 2


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_and_the_changed_settings_are_valid(cls):
    if cls is not ExportConfig:  # an export needs its output folder
        assert cls().problems() == []
    assert cls.from_dict(CHANGED[cls]).problems() == []


# --- YAML files -----------------------------------------------------------------------------------

def test_unknown_keys_name_the_file_the_key_and_where_the_fields_are_documented(tmp_path):
    path = tmp_path / "synth.yaml"
    path.write_text("synth:\n  generator: openai\n  temprature: 0.2\n  endpoint:\n    rmp: 10\n")
    with pytest.raises(ConfigError) as err:
        SynthConfig.from_file(path)
    top, nested = err.value.problems
    assert top.startswith(f"{path}: unknown synth setting(s) ['temprature']")
    assert "SynthConfig in backend/synth_config.py" in top and "README's Config reference" in top
    assert nested.startswith(f"{path}: unknown synth.endpoint setting(s) ['rmp']")
    assert "EndpointConfig in backend/endpoint_config.py" in nested


def test_a_section_that_is_not_a_mapping_is_a_problem(tmp_path):
    path = tmp_path / "ingest.yaml"
    path.write_text("chunk: 512\n")
    with pytest.raises(ConfigError, match="`ingest.chunk` must be a mapping of settings, got int"):
        IngestConfig.from_file(path)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_from_file_reads_back_what_to_dict_wrote(cls, tmp_path):
    cfg = cls.from_dict(CHANGED[cls])
    assert cfg != cls()
    in_section, plain = tmp_path / "in_section.yaml", tmp_path / "plain.yaml"
    in_section.write_text(yaml.safe_dump({cls.section: cfg.to_dict()}))
    plain.write_text(yaml.safe_dump(cfg.to_dict()))
    assert cls.from_file(in_section) == cfg and cls.from_file(plain) == cfg


def test_a_partial_section_keeps_the_other_defaults():
    cfg = SynthConfig.from_dict(CHANGED[SynthConfig])
    assert (cfg.endpoint.model, cfg.endpoint.rpm) == ("m", 5)
    assert cfg.endpoint.base_url == EndpointConfig().base_url and cfg.temperature == SynthConfig().temperature


def test_one_file_holds_several_stages(tmp_path):
    path = tmp_path / "project.yaml"
    path.write_text("synth:\n  endpoint: {model: m}\ncurate:\n  judge_threshold: 5\n")
    assert SynthConfig.from_file(path).endpoint.model == "m"
    assert CurateConfig.from_file(path).judge_threshold == 5
    assert EvalConfig.from_file(path) == EvalConfig()  # no `eval:` section: the defaults


@pytest.mark.parametrize("path", sorted(PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_from_its_file(path):
    cfg = TrainConfig.from_file(path).validate()
    assert replace(cfg, preset=path.stem) == load_preset(path.stem)


def test_endpoint_keys_beside_the_synth_keys_are_read_into_the_endpoint():
    """The form of files and stored runs from before `endpoint:` existed (tests/reliability/test_secrets.py)."""
    flat = SynthConfig.from_dict({"generator": "openai", "base_url": "http://127.0.0.1:9/v1", "rpm": 5,
                                  "endpoint": {"model": "m"}})
    assert flat == SynthConfig(generator="openai", endpoint=EndpointConfig(base_url="http://127.0.0.1:9/v1", rpm=5,
                                                                           model="m"))


# --- the synthesis fingerprint --------------------------------------------------------------------

def test_fingerprint_is_the_one_of_before_the_endpoint_section_and_ignores_limits():
    def fingerprint(**endpoint) -> str:
        endpoint = {"base_url": "http://x/v1", "model": "m"} | endpoint
        return SynthConfig(generator="openai", prompts_dir="/p", endpoint=EndpointConfig(**endpoint)).fingerprint()

    # the values a flat SynthConfig of these settings had, so runs stored then resume
    assert fingerprint() == "cc7b31b14e6c"
    assert fingerprint(base_url="http://y/v1") == "01fcbd054460"
    assert fingerprint(model="other") != fingerprint()
    assert fingerprint(rpm=5, tpm=9, concurrency=3, workers=9, max_attempts=1, json_mode=False,
                       request_timeout_s=1.0, prices={"m": {"input": 1.0, "output": 1.0}}) == fingerprint()


# --- documentation and flags ----------------------------------------------------------------------

@pytest.mark.parametrize("cls", all_config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert [f.name for f in fields(cls) if not docs.get(f.name)] == []


def test_flags_parse_into_the_config_with_the_docstring_as_help():
    names = ["generator", "endpoint.base_url", "endpoint.rpm", "max_cost_usd"]
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SynthConfig, names)
    args = parser.parse_args(["--rpm", "30", "--base-url", "http://127.0.0.1:8000/v1", "--generator", "openai"])
    cfg = apply_config_flags(SynthConfig(), args, names)
    assert (cfg.generator, cfg.endpoint.base_url, cfg.endpoint.rpm) == ("openai", "http://127.0.0.1:8000/v1", 30)
    assert cfg.max_cost_usd is None  # not given: the config's own value stays
    assert "Requests per minute allowed by your plan. (default: 600)" in " ".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args(["--generator", "gpt"])


def test_bool_and_list_flags():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, IngestConfig, ["respect_gitignore", "include"])
    add_config_flags(parser, CurateConfig, ["exec_check"])
    args = parser.parse_args(["--no-gitignore", "--include", "docs/**", "--include", "*.py", "--exec-check"])
    ingest = apply_config_flags(IngestConfig(), args, ["respect_gitignore", "include"])
    assert not ingest.respect_gitignore and ingest.include == ["docs/**", "*.py"]
    assert apply_config_flags(CurateConfig(), args, ["exec_check"]).exec_check
    assert apply_config_flags(IngestConfig(), parser.parse_args([]), ["respect_gitignore"]).respect_gitignore


def test_every_flag_of_every_config_can_be_added():
    assert flag_fields(SynthConfig) == ["generator", "endpoint.base_url", "endpoint.model", "endpoint.concurrency",
                                        "endpoint.rpm", "endpoint.tpm", "language", "max_cost_usd", "max_chunks"]
    for cls in CONFIGS:
        add_config_flags(argparse.ArgumentParser(), cls, flag_fields(cls))
    with pytest.raises(ValueError, match="no command-line flag"):
        add_config_flags(argparse.ArgumentParser(), SynthConfig, ["seed"])


def test_configs_and_their_flags_import_nothing_heavy():
    code = ("import argparse, sys; from backend.config_base import add_config_flags, flag_fields\n"
            "import backend.config_doc as d\n"
            "for cls in d.CONFIGS: add_config_flags(argparse.ArgumentParser(), cls, flag_fields(cls))\n"
            "print(sorted({'torch', 'numpy', 'pyarrow', 'ray', 'duckdb', 'pandas'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
