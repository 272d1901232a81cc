from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.config import CONFIG_KEYS, env_name, load_config
from tidemark.errors import ERROR_CATALOG, ConfigError, TidemarkError, describe_error


def test_defaults_without_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.volumetric_divisor == 4800
    assert cfg.turnaround_minutes == 20
    assert cfg.retry_max_attempts == 4
    assert cfg.get("carriers.default") == "saltmarsh"


def test_layer_precedence(tmp_path: Path):
    path = tmp_path / "tidemark.toml"
    path.write_text('[tidemark]\nregion = "south-quay"\n[tidemark.retry]\nmax_attempts = 6\njitter = 0.2\n')
    cfg = load_config(path, env={"TIDEMARK_RETRY_MAX_ATTEMPTS": "8"}, overrides={"retry.jitter": 0})
    assert cfg.region == "south-quay"
    assert cfg.retry_max_attempts == 8
    assert cfg.retry_jitter == 0.0


def test_env_bool_coercion():
    cfg = load_config(env={"TIDEMARK_MANIFEST_STRICT_SEALS": "off", "TIDEMARK_LEDGER_FSYNC": "yes"})
    assert cfg.strict_seals is False and cfg.ledger_fsync is True


def test_unknown_key_in_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[tidemark.docks]\nturnaround = 15\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.code == "TM-1001"


@pytest.mark.parametrize(
    "overrides",
    [{"retry.max_attempts": 0}, {"retry.jitter": 1.5}, {"docks.open": "6am"}, {"rates.bunker_index": "x"},
     {"docks.open": "23:00", "docks.close": "22:00"}],
)
def test_bad_values_raise_tm_1002(overrides: dict):
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=overrides)
    assert info.value.code == "TM-1002"


def test_unreadable_toml(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("[tidemark\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.code == "TM-1003"


def test_env_names_are_derived_from_keys():
    assert env_name("docks.turnaround_minutes") == "TIDEMARK_DOCKS_TURNAROUND_MINUTES"
    assert len({k.key for k in CONFIG_KEYS}) == len(CONFIG_KEYS)


def test_error_formatting_and_catalogue():
    err = TidemarkError("boom", code="TM-7002", hint="retry later", carrier="kestrel")
    assert str(err) == "[TM-7002] boom"
    assert err.retryable
    assert err.to_dict()["context"] == {"carrier": "kestrel"}
    assert describe_error("6002") == ERROR_CATALOG["TM-6002"]
    with pytest.raises(KeyError):
        describe_error("TM-0999")
