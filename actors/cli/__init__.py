"""`doctune`: the command line. Each group of commands is a module that adds its subcommands and runs them;
what they raise becomes an exit code and one message here, in one table. Heavy libraries (Ray, DuckDB, pyarrow,
langchain, torch) load inside the commands that use them, so `doctune --help` answers at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from actors.cli import corpus, data, evaluation, ops, serving, training
from actors.cli.common import UserError, connect
from actors.runtime import TOKEN_FILE_VARIABLE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ray_token_file:  # read where Ray is joined, and by the dashboard this command may hand over to
        os.environ[TOKEN_FILE_VARIABLE] = str(Path(args.ray_token_file).expanduser().resolve())
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        for raised, code, message in _exit_codes():
            if isinstance(exc, raised):
                print(message(exc, args), file=sys.stderr)
                return code
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="doctune",
        description="Turn a repository's documentation into a fine-tuning dataset and a LoRA-tuned model.",
    )
    p.add_argument("--home", default=None,
                   help="folder holding the database and run artifacts (env DOCTUNE_HOME; default data/runtime)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (env RAY_ADDRESS); default: start a local one on 127.0.0.1")
    p.add_argument("--ray-token-file", default=None,
                   help=f"the token of the cluster at --ray-address (env {TOKEN_FILE_VARIABLE}, or the token itself "
                        "in RAY_AUTH_TOKEN); this home's own cluster needs none")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (corpus, data, training, evaluation, serving, ops):
        group.add_commands(sub)
    return p


def _exit_codes() -> list[tuple]:
    """(what a command raised, exit code, the line for stderr), first match wins. The messages are written where
    the problem is found and say how to fix it; anything not listed is a bug and keeps its traceback."""
    # backend.ingest imports pyarrow: loaded once a command has failed, not for `doctune --help`
    from backend.ingest import IngestError

    return [
        (KeyboardInterrupt, 130, lambda exc, args: "interrupted; finished batches are stored, rerun to continue"),
        (KeyError, 2, _unknown_project),
        # StoreLockedError is one; Ray re-raises the store actor's with the actor's traceback appended
        (RuntimeError, 2, lambda exc, args: "error: " + _cause(exc)),
        # ConfigError is a ValueError: its message lists every problem of the config with its fix
        ((UserError, ValueError, IngestError), 2, lambda exc, args: f"error: {exc}"),
        # a home that is a symlink or someone else's folder (backend.config.private_folder says which and why)
        (PermissionError, 2, lambda exc, args: f"error: {exc}"),
    ]


def _cause(exc: BaseException) -> str:
    """What really went wrong, in one line: the message of the exception a Ray task or actor raised (Ray's own
    text starts with its traceback: `ray::StoreActor.ready() (pid=...)`), else the exception's first line."""
    from ray.exceptions import RayActorError, RayTaskError  # loaded once a command has failed

    while isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException) and exc.cause is not exc:
        exc = exc.cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    # a Ray error without a cause object (an actor that died in its constructor) ends with the cause's own line
    return lines[-1] if isinstance(exc, (RayTaskError, RayActorError)) else lines[0]


def _unknown_project(exc: KeyError, args) -> str:
    """The client raises KeyError for a project that does not exist (its Raises say so)."""
    names = ", ".join(p["name"] for p in connect(args).projects()) or "none yet"
    return (f"error: no project '{args.project}' (projects: {names}); create it with "
            f"`doctune ingest PATH --project {args.project}`")
