"""Show how defaults, a TOML file, environment variables and overrides combine.

Everything is written to a temporary directory that is removed afterwards.

Run from the repository root:  python examples/config_layers.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark.config import load_config  # noqa: E402
from tidemark.errors import ConfigError  # noqa: E402
from tidemark.retry import RetryPolicy  # noqa: E402

TOML = """
[tidemark]
region = "south-quay"

[tidemark.retry]
max_attempts = 6
base_delay_s = 1.0

[tidemark.docks]
open = "05:30"
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tidemark.toml"
        path.write_text(TOML, encoding="utf-8")
        env = {"TIDEMARK_RETRY_MAX_ATTEMPTS": "5", "TIDEMARK_MANIFEST_STRICT_SEALS": "false"}
        cfg = load_config(path, env=env, overrides={"retry.jitter": 0.0})
        for key in ("region", "docks.open", "manifest.strict_seals", "retry.max_attempts", "retry.jitter"):
            print(f"{key:<24} = {cfg.get(key)!r}")
        print("retry schedule:", RetryPolicy.from_config(cfg).schedule())

        path.write_text("[tidemark.retry]\nmax_tries = 3\n", encoding="utf-8")
        try:
            load_config(path, env={})
        except ConfigError as exc:
            print(f"rejected: {exc}")


if __name__ == "__main__":
    main()
