"""What every command module shares: the user-facing error, the connection to the home, and printing a
result as JSON or for people."""

from __future__ import annotations

import argparse
import json
import os

from backend.config import check_project_name


class UserError(Exception):
    """A problem the user fixes; its message says how. `main` prints it and exits 2."""


def add_project(parser, **kwargs) -> None:
    """The `--project NAME` option, refused by argparse (exit 2, with the pattern) when it is no valid name."""
    parser.add_argument("--project", type=_project_name, metavar="NAME", **kwargs)


def _project_name(text: str) -> str:
    try:
        return check_project_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_project_view(sub, name: str, help: str, func) -> None:
    """A subcommand that shows one thing about a project: `--project` and `--json`, nothing else."""
    p = sub.add_parser(name, help=help)
    add_project(p, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=func)


def config_source(config: str | None) -> str:
    """Where a command's settings came from (its `--config` file, if any, then its flags), for the header of an
    invalid configuration's message; the file's own problems name it on every line."""
    return f"{config} and the command line" if config else "the command line"


def connect(args):
    """The client of `--home` on `--ray-address` (joining or starting Ray)."""
    # the client module imports Ray: loaded here, when a command needs it, so `doctune --help` stays fast
    from actors.client import DocTune

    return DocTune(args.home, args.ray_address)


def cluster_named(args) -> bool:
    """Whether the user named a Ray cluster to join (--ray-address or RAY_ADDRESS); commands whose runs must
    outlive them otherwise start this home's own."""
    return bool(args.ray_address or os.environ.get("RAY_ADDRESS"))


def emit(args, data, human) -> None:
    """`data` as indented JSON with `--json`, else through the command's printer `human`."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)
