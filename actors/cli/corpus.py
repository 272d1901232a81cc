"""Commands on a project's corpus: `ingest`, `stats`, `projects`."""

from __future__ import annotations

import os

from backend.config import ChunkConfig, IngestConfig
from actors.cli.common import UserError, add_project_view, connect, emit
from actors.printers import chunking_bar, print_ingest, print_projects, print_stats


def add_commands(sub) -> None:
    ing = sub.add_parser("ingest", help="read a repository's docs and code into chunks")
    ing.add_argument("path", help="the repository folder")
    ing.add_argument("--project", required=True, help="project name (created on first ingest)")
    ing.add_argument("--include", action="append", default=[], metavar="GLOB",
                     help="only read matching files (gitignore syntax; repeatable)")
    ing.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                     help="never read matching files (gitignore syntax; repeatable)")
    ing.add_argument("--no-gitignore", action="store_true", help="read files that .gitignore excludes")
    ing.add_argument("--max-file-bytes", type=int, default=None, help="skip larger files (default 2000000)")
    ing.add_argument("--max-tokens", type=int, default=None, help="token bound per chunk (default 512)")
    ing.add_argument("--overlap-tokens", type=int, default=None, help="overlap between split pieces (default 64)")
    ing.add_argument("--tokenizer", default=None,
                     help="local tokenizer folder/file or cached hub name for exact token counts")
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
    chunk = ChunkConfig(tokenizer=args.tokenizer)
    if args.max_tokens is not None:
        chunk.max_tokens = args.max_tokens
    if args.overlap_tokens is not None:
        chunk.overlap_tokens = args.overlap_tokens
    cfg = IngestConfig(include=args.include, exclude=args.exclude, respect_gitignore=not args.no_gitignore,
                       chunk=chunk)
    if args.max_file_bytes is not None:
        cfg.max_file_bytes = args.max_file_bytes
    return cfg


def cmd_stats(args) -> int:
    emit(args, connect(args).stats(args.project), print_stats)
    return 0


def cmd_projects(args) -> int:
    emit(args, connect(args).projects(), print_projects)
    return 0
