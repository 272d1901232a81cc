"""Layered configuration for tidemark.

Configuration is resolved from four layers, later layers winning:

1. built-in defaults (see :data:`CONFIG_KEYS`),
2. a TOML file (``--config PATH``, the ``TIDEMARK_CONFIG`` environment
   variable, or ``./tidemark.toml`` if it exists),
3. environment variables named ``TIDEMARK_<SECTION>_<KEY>``
   (e.g. ``TIDEMARK_RETRY_MAX_ATTEMPTS=6``),
4. explicit ``overrides`` passed to :func:`load_config`.

All keys live under the ``[tidemark]`` table of the TOML file, e.g.::

    [tidemark]
    region = "north-basin"

    [tidemark.retry]
    max_attempts = 6
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["ConfigKey", "CONFIG_KEYS", "TidemarkConfig", "load_config", "env_name"]


@dataclass(frozen=True)
class ConfigKey:
    """Description of one configuration key.

    Attributes:
        key: Dotted key as used in TOML (``"retry.max_attempts"``).
        attr: Attribute name on :class:`TidemarkConfig`.
        type: Python type the value is coerced to.
        default: Built-in default value.
        description: One line description shown by ``tidemark config show``.
    """

    key: str
    attr: str
    type: type
    default: Any
    description: str


#: Every supported configuration key, in documentation order.
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("region", "region", str, "north-basin", "Terminal region label; informational, shown by dashboards."),
    ConfigKey("currency", "currency", str, "EUR", "Expected currency of rate cards used by the CLI."),
    ConfigKey("manifest.strict_seals", "strict_seals", bool, True, "Accept only BW####### seals."),
    ConfigKey("manifest.volumetric_divisor", "volumetric_divisor", int, 4800, "cm3 per volumetric kg."),
    ConfigKey("manifest.max_lines", "max_lines", int, 400, "Maximum number of lines per manifest."),
    ConfigKey("docks.open", "dock_open", str, "06:00", "Daily opening time of the dock doors (HH:MM)."),
    ConfigKey("docks.close", "dock_close", str, "22:00", "Daily closing time of the dock doors (HH:MM)."),
    ConfigKey("docks.turnaround_minutes", "turnaround_minutes", int, 20, "Gap enforced between bookings on a door."),
    ConfigKey("retry.max_attempts", "retry_max_attempts", int, 4, "Total attempts including the first call."),
    ConfigKey("retry.base_delay_s", "retry_base_delay_s", float, 0.5, "Delay before the second attempt."),
    ConfigKey("retry.max_delay_s", "retry_max_delay_s", float, 30.0, "Upper bound for any single delay."),
    ConfigKey("retry.jitter", "retry_jitter", float, 0.1, "Relative jitter applied to each delay (0-1)."),
    ConfigKey("ledger.path", "ledger_path", str, "", "JSON-lines file for the event ledger; empty = in memory."),
    ConfigKey("ledger.fsync", "ledger_fsync", bool, False, "fsync the ledger file after every append."),
    ConfigKey("rates.bunker_index", "bunker_index", float, 1.0, "Multiplier applied to the card's bunker factor."),
    ConfigKey("carriers.default", "default_carrier", str, "saltmarsh", "Carrier used when a manifest names none."),
)

_BY_KEY: dict[str, ConfigKey] = {k.key: k for k in CONFIG_KEYS}


def env_name(key: str) -> str:
    """Return the environment variable that overrides a dotted key.

    Examples:
        >>> env_name("retry.max_attempts")
        'TIDEMARK_RETRY_MAX_ATTEMPTS'
    """
    return "TIDEMARK_" + key.upper().replace(".", "_")


@dataclass(frozen=True)
class TidemarkConfig:
    """Resolved, immutable configuration. Build it with :func:`load_config`."""

    region: str = "north-basin"
    currency: str = "EUR"
    strict_seals: bool = True
    volumetric_divisor: int = 4800
    max_lines: int = 400
    dock_open: str = "06:00"
    dock_close: str = "22:00"
    turnaround_minutes: int = 20
    retry_max_attempts: int = 4
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0
    retry_jitter: float = 0.1
    ledger_path: str = ""
    ledger_fsync: bool = False
    bunker_index: float = 1.0
    default_carrier: str = "saltmarsh"

    def get(self, key: str) -> Any:
        """Look a value up by its dotted key.

        Raises:
            ConfigError: ``TM-1001`` for an unknown key.
        """
        if key not in _BY_KEY:
            raise ConfigError(f"unknown configuration key {key!r}", code="TM-1001")
        return getattr(self, _BY_KEY[key].attr)

    def as_dict(self) -> dict[str, Any]:
        """Return ``{dotted_key: value}`` for every key."""
        return {k.key: getattr(self, k.attr) for k in CONFIG_KEYS}


def _coerce(spec: ConfigKey, value: Any, source: str) -> Any:
    try:
        if spec.type is bool:
            if isinstance(value, bool):
                result: Any = value
            elif isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
                result = True
            elif isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
                result = False
            else:
                raise ValueError(value)
        elif spec.type is int and isinstance(value, bool):
            raise ValueError(value)
        else:
            result = spec.type(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{spec.key} from {source} must be {spec.type.__name__}, got {value!r}",
            code="TM-1002",
            key=spec.key,
        ) from None
    _check_range(spec, result, source)
    return result


def _check_range(spec: ConfigKey, value: Any, source: str) -> None:
    bad = False
    if spec.key in {"docks.open", "docks.close"}:
        text = str(value)
        bad = not re.fullmatch(r"\d{2}:\d{2}", text) or int(text[:2]) > 23 or int(text[3:]) > 59
    elif spec.key == "retry.max_attempts":
        bad = value < 1
    elif spec.key == "retry.jitter":
        bad = not 0.0 <= value <= 1.0
    elif spec.type in (int, float) and spec.key != "rates.bunker_index":
        bad = value < 0
    elif spec.key == "rates.bunker_index":
        bad = value <= 0
    if bad:
        raise ConfigError(f"{spec.key} from {source} is out of range: {value!r}", code="TM-1002", key=spec.key)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", code="TM-1003", path=str(path)) from exc
    return _flatten(data.get("tidemark", {}))


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TidemarkConfig:
    """Resolve configuration from defaults, file, environment and overrides.

    Args:
        path: TOML file to read. When ``None`` the ``TIDEMARK_CONFIG``
            variable is used, then ``./tidemark.toml`` if it exists.
        env: Environment mapping; defaults to :data:`os.environ`. Pass ``{}``
            in tests to ignore the real environment.
        overrides: Dotted keys that win over every other layer.

    Returns:
        A frozen :class:`TidemarkConfig`.

    Raises:
        ConfigError: ``TM-1001`` for unknown keys in the file or overrides,
            ``TM-1002`` for bad values, ``TM-1003`` for unreadable files.

    Examples:
        >>> cfg = load_config(env={}, overrides={"retry.max_attempts": 6})
        >>> cfg.retry_max_attempts
        6
    """
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}

    if path is None and environ.get("TIDEMARK_CONFIG"):
        path = environ["TIDEMARK_CONFIG"]
    if path is None and Path("tidemark.toml").is_file():
        path = Path("tidemark.toml")
    if path is not None:
        for key, raw in _read_file(Path(path)).items():
            if key not in _BY_KEY:
                raise ConfigError(f"unknown configuration key {key!r} in {path}", code="TM-1001", key=key)
            values[_BY_KEY[key].attr] = _coerce(_BY_KEY[key], raw, str(path))

    for spec in CONFIG_KEYS:
        name = env_name(spec.key)
        if name in environ:
            values[spec.attr] = _coerce(spec, environ[name], name)

    for key, raw in (overrides or {}).items():
        if key not in _BY_KEY:
            raise ConfigError(f"unknown configuration key {key!r}", code="TM-1001", key=key)
        values[_BY_KEY[key].attr] = _coerce(_BY_KEY[key], raw, "overrides")

    config = replace(TidemarkConfig(), **values)
    if config.dock_open >= config.dock_close:
        raise ConfigError("docks.open must be earlier than docks.close", code="TM-1002")
    return config


# Keep the dataclass and key table in sync; a mismatch is a programming error.
assert {f.name for f in fields(TidemarkConfig)} == {k.attr for k in CONFIG_KEYS}
