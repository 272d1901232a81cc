"""Commands on a project's corpus: `ingest`, `stats`, `projects`."""

from __future__ import annotations

import os

from backend.config_base import add_config_flags, apply_config_flags
from backend.ingest_config import IngestConfig
from actors.cli.common import UserError, add_project, add_project_view, connect, emit
from actors.printers import chunking_bar, print_ingest, print_projects, print_stats


INGEST_FLAGS = ["include", "exclude", "respect_gitignore", "max_file_bytes", "chunk.max_tokens",
                "chunk.overlap_tokens", "chunk.tokenizer"]


def add_commands(sub) -> None:
    ing = sub.add_parser("ingest", help="read a repository's docs and code into chunks")
    ing.add_argument("path", help="the repository folder")
    add_project(ing, required=True, help="project name (created on first ingest)")
    add_config_flags(ing, IngestConfig, INGEST_FLAGS)
    ing.add_argument("--json", action="store_true", help="print the report as JSON")
    ing.set_defaults(func=cmd_ingest)

    add_project_view(sub, "stats", "files, skipped files, chunks and tokens of a project", cmd_stats)

    pr = sub.add_parser("projects", help="list projects")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_projects)


def cmd_ingest(args) -> int:
    cfg = _ingest_config(args).validate()
    # checked before connecting, so a mistyped path does not wait for Ray to start
    if not os.path.isdir(args.path):
        what = "does not exist" if not os.path.exists(args.path) else "is not a folder"
        raise UserError(f"{args.path} {what}; pass the path of a repository folder")
    client = connect(args)
    with chunking_bar(quiet=args.json) as (on_plan, on_progress):
        report = client.ingest(args.path, args.project, cfg, on_progress=on_progress, on_plan=on_plan)
    emit(args, report.as_dict(), print_ingest)
    return 0


def _ingest_config(args) -> IngestConfig:
    return apply_config_flags(IngestConfig(), args, INGEST_FLAGS)


def cmd_stats(args) -> int:
    emit(args, connect(args).stats(args.project), print_stats)
    return 0


def cmd_projects(args) -> int:
    emit(args, connect(args).projects(), print_projects)
    return 0
