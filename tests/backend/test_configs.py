"""Every stage's config on the one base: problems of nested sections, YAML files (unknown keys named with the file),
round trips, field docstrings, command-line flags; the synthesis fingerprint across the `endpoint:` section."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing
from dataclasses import fields, replace

import pytest
import yaml

from backend.config import REPO_ROOT
from backend.config_base import (BOUNDS, ConfigError, add_config_flags, apply_config_flags, field_docs, flag_fields,
                                 nested_sections, read_yaml, type_hints)
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
    assert problems == ["synth.tasks_per_chunk=0 must be at least 1 and at most 6 (default 2)",
                        "endpoint.rpm=0 must be at least 1 and at most 10000000 (default 600; flag --rpm)",
                        "endpoint.request_timeout_s=0 must be above 0 and at most 3600 (default 120.0)"]
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


# --- types and bounds ------------------------------------------------------------------------------

WRONG_TYPES = [  # (config, a file's settings, the field named, the type asked for)
    (SynthConfig, {"endpoint": {"concurrency": "abc"}}, "synth.endpoint.concurrency=\"abc\"", "a whole number"),
    (SynthConfig, {"endpoint": {"rpm": True}}, "synth.endpoint.rpm=true", "a whole number"),  # a bool is no int
    (SynthConfig, {"task_mix": {"qa": "x"}}, "synth.task_mix['qa']=\"x\"", "a number"),
    (SynthConfig, {"task_mix": ["qa"]}, "synth.task_mix=[\"qa\"]", "a mapping of text to numbers"),
    (SynthConfig, {"endpoint": {"prices": {"m": {"input": "1"}}}}, "synth.endpoint.prices['m']['input']", "a number"),
    (SynthConfig, {"max_cost_usd": "5"}, "synth.max_cost_usd=\"5\"", "a number, or null"),
    (IngestConfig, {"exclude": "tests/**"}, "ingest.exclude=\"tests/**\"", "a list of text"),
    (IngestConfig, {"chunk": {"tokenizer": 5}}, "ingest.chunk.tokenizer=5", "text, or null"),
    (TrainConfig, {"data": {"tasks": ["facts", 3]}}, "train.data.tasks[1]=3", "text"),
    (TrainConfig, {"training": {"learning_rate": "1e-4"}}, "train.training.learning_rate", "write it with a dot"),
    (TrainConfig, {"model": {"load_in_4bit": "yes"}}, "train.model.load_in_4bit=\"yes\"", "true or false"),
    (EvalConfig, {"limits": {"probe": 2.5}}, "eval.limits['probe']=2.5", "a whole number"),
    (CurateConfig, {"splits": {"train": None}}, "curate.splits['train']=null", "a number"),
]


@pytest.mark.parametrize("cls,data,named,expected", WRONG_TYPES, ids=lambda v: str(v)[:40])
def test_a_value_of_the_wrong_type_names_the_file_the_field_and_the_type(cls, data, named, expected):
    with pytest.raises(ConfigError) as err:
        cls.from_dict(data, "my.yaml")
    (problem,) = err.value.problems
    assert problem.startswith(f"my.yaml: {named}") and expected in problem and "(default " in problem


def test_types_that_fit():
    fitting = {"num_train_epochs": 2, "learning_rate": 1, "save_total_limit": None}  # an int is a float; None
    assert TrainConfig.from_dict({"training": fitting, "data": {"tasks": None}}).problems() == []
    assert SynthConfig.from_dict({"task_mix": {"qa": 1}, "max_cost_usd": 3}).problems() == []


def test_types_are_checked_in_validate_too_and_own_checks_wait_for_them():
    """A config built in code (the dashboard's forms) gets the same checks; `own_problems` would compare text."""
    cfg = CurateConfig(num_perm="64", splits={"train": "all"})
    assert [p.split("=")[0] for p in cfg.problems()] == ["curate.num_perm", "curate.splits['train']"]
    assert SynthConfig(endpoint={"rpm": 5}).problems() == [
        "endpoint must be a mapping of settings (EndpointConfig), got dict"]


OUT_OF_BOUNDS = [
    (SynthConfig, {"temperature": 2.5}, "synth.temperature=2.5 must be at least 0 and at most 2"),
    (SynthConfig, {"max_output_tokens": 2_000_000}, "synth.max_output_tokens=2000000 must be at least 1 and at most"),
    (SynthConfig, {"endpoint": {"concurrency": 0}}, "synth.endpoint.concurrency=0 must be at least 1 and at most 10000"),
    (SynthConfig, {"endpoint": {"tpm": -5}}, "synth.endpoint.tpm=-5 must be at least 1"),
    (SynthConfig, {"max_cost_usd": 0}, "synth.max_cost_usd=0 must be above 0"),
    (CurateConfig, {"judge_threshold": 11}, "curate.judge_threshold=11 must be at least 1 and at most 10"),
    (TrainConfig, {"training": {"learning_rate": 5.0}}, "train.training.learning_rate=5.0 must be above 0 and at most 1"),
    (TrainConfig, {"training": {"per_device_train_batch_size": 0}}, "train.training.per_device_train_batch_size=0 must be at least 1"),
    (TrainConfig, {"model": {"max_seq_length": 10_000_000}}, "train.model.max_seq_length=10000000 must be at least 16"),
    (TrainConfig, {"lora": {"dropout": 1.0}}, "train.lora.dropout=1.0 must be at least 0 and below 1"),
    (EvalConfig, {"limit": 0}, "eval.limit=0 must be at least 1"),
    (EvalConfig, {"batch_size": 100_000}, "eval.batch_size=100000 must be at least 1 and at most 4096"),
    (IngestConfig, {"chunk": {"max_tokens": 8}}, "ingest.chunk.max_tokens=8 must be at least 16"),
]


@pytest.mark.parametrize("cls,data,message", OUT_OF_BOUNDS, ids=lambda v: str(v)[:40])
def test_a_value_out_of_bounds_names_the_file_the_field_and_the_bounds(cls, data, message):
    with pytest.raises(ConfigError) as err:
        cls.from_dict(data, "my.yaml")
    assert err.value.problems[0].startswith(f"my.yaml: {message}") and "(default " in err.value.problems[0]


def test_every_numeric_setting_has_bounds_and_its_default_keeps_them():
    for cls in all_config_classes():
        hints = type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            scalar = typing.get_origin(hint) not in (list, dict)  # a number, or a number or null
            if scalar and {hint, *typing.get_args(hint)} & {int, float}:
                assert {"min", "above"} & set(f.metadata) and {"max", "below"} & set(f.metadata), \
                    f"{cls.__name__}.{f.name} needs bounds"
                assert set(f.metadata) - {"flag", "choices"} <= set(BOUNDS)
    for cls in CONFIGS:
        assert cls().problems() == [] or cls is ExportConfig


def test_flags_go_through_the_same_checks():
    names = ["endpoint.concurrency", "max_cost_usd"]
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SynthConfig, names)
    cfg = apply_config_flags(SynthConfig(), parser.parse_args(["--concurrency", "20000", "--max-cost", "-1"]), names)
    with pytest.raises(ConfigError) as err:
        cfg.validate("the command line")
    assert str(err.value).startswith("invalid configuration (the command line):")
    assert [p.split(" must")[0] for p in err.value.problems] == ["synth.max_cost_usd=-1.0",
                                                                "endpoint.concurrency=20000"]
    assert "; flag --concurrency" in err.value.problems[1] and "; flag --max-cost" in err.value.problems[0]


BAD_FILES = [  # (the file's text, what the one problem says after the file's name)
    ("synth:\n  concurrency: [1\n", ":3:1: invalid YAML: "),
    ("synth:\n\tconcurrency: 4\n", ":2:1: invalid YAML: found character '\\t'"),
    ("- synth\n- train\n", ": holds a list, not a mapping of settings"),
    ("just words\n", ": holds text, not a mapping of settings"),
    ("synth: 5\n", ": `synth` must be a mapping of settings, got int"),
]


@pytest.mark.parametrize("text,said", BAD_FILES, ids=lambda v: v[:20])
def test_a_file_that_is_no_mapping_of_settings_is_one_problem_naming_it(tmp_path, text, said):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        SynthConfig.from_file(path)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}{said}"), problem


def test_a_missing_or_unreadable_file_is_one_problem_naming_it(tmp_path):
    for path, said in [(tmp_path / "nope.yaml", "no such config file"), (tmp_path, "is a folder")]:
        with pytest.raises(ConfigError, match=said):
            read_yaml(path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"synth: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        TrainConfig.from_file(binary)


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
                                        "endpoint.rpm", "endpoint.tpm", "language", "max_cost_usd", "max_chunks",
                                        "target_samples"]
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
