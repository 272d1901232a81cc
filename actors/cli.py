"""`doctune`: the command line. Heavy imports (Ray, DuckDB, langchain) happen inside commands,
so `doctune --help` answers at once."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="doctune",
        description="Turn a repository's documentation into a fine-tuning dataset and a LoRA-tuned model.",
    )
    p.add_argument("--home", default=None,
                   help="folder holding the database and run artifacts (env DOCTUNE_HOME; default data/runtime)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (env RAY_ADDRESS); default: start a local one on 127.0.0.1")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    st = sub.add_parser("stats", help="files, skipped files, chunks and tokens of a project")
    st.add_argument("--project", required=True)
    st.add_argument("--json", action="store_true")

    pr = sub.add_parser("projects", help="list projects")
    pr.add_argument("--json", action="store_true")

    ru = sub.add_parser("runs", help="list runs (ingest, synthesis, training, evaluation)")
    ru.add_argument("--project", default=None)
    ru.add_argument("--limit", type=int, default=50)
    ru.add_argument("--json", action="store_true")

    de = sub.add_parser("demo", help="run the pipeline on the bundled sample repository")
    de.add_argument("--project", default="sample")
    de.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; finished batches are stored, rerun to continue", file=sys.stderr)
        return 130
    except _UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class _UserError(Exception):
    pass


def _connect(args):
    from backend.store import StoreLockedError
    from actors.client import DocTune

    try:
        return DocTune(args.home, args.ray_address)
    except StoreLockedError as exc:
        raise _UserError(str(exc).split("\n")[0]) from None


def _emit(args, data, human) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def cmd_ingest(args) -> int:
    from backend.config import ChunkConfig, ConfigError, IngestConfig
    from backend.ingest import IngestError

    chunk = ChunkConfig(tokenizer=args.tokenizer)
    if args.max_tokens is not None:
        chunk.max_tokens = args.max_tokens
    if args.overlap_tokens is not None:
        chunk.overlap_tokens = args.overlap_tokens
    cfg = IngestConfig(include=args.include, exclude=args.exclude, respect_gitignore=not args.no_gitignore,
                       chunk=chunk)
    if args.max_file_bytes is not None:
        cfg.max_file_bytes = args.max_file_bytes
    try:
        cfg.validate()
    except ConfigError as exc:
        raise _UserError(str(exc)) from None
    if not os.path.isdir(args.path):
        what = "does not exist" if not os.path.exists(args.path) else "is not a folder"
        raise _UserError(f"{args.path} {what}; pass the path of a repository folder")
    client = _connect(args)
    report = _run_ingest(client, args.path, args.project, cfg, quiet=args.json)
    _emit(args, report.as_dict(), _print_ingest)
    return 0


def _run_ingest(client, path, project, cfg, quiet: bool):
    from tqdm import tqdm

    from backend.ingest import IngestError

    bar = None

    def on_plan(n):
        nonlocal bar
        bar = tqdm(total=n, unit="file", desc="chunking", disable=quiet or None, file=sys.stderr)

    def on_progress(files, _bytes):
        bar.update(files)

    try:
        return client.ingest(path, project, cfg, on_progress=on_progress, on_plan=on_plan)
    except IngestError as exc:
        raise _UserError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()


def _print_ingest(r: dict) -> None:
    skipped = sum(r["skipped"].values())
    print(f"ingested {r['root']} into project '{r['project']}' ({r['seconds']:.1f}s, run {r['run_id']})")
    print(f"  files: {r['new']} new, {r['changed']} changed, {r['unchanged']} unchanged, "
          f"{skipped} skipped, {r['gone']} gone, {r['ignored']} ignored")
    for reason, n in r["skipped"].items():
        print(f"    skipped {reason}: {n}")
    print(f"  chunks written: {r['chunks_written']} from {r['bytes_chunked'] / 1e6:.2f} MB")


def cmd_stats(args) -> int:
    client = _connect(args)
    try:
        stats = client.stats(args.project)
    except KeyError:
        names = ", ".join(p["name"] for p in client.projects()) or "none yet"
        raise _UserError(f"no project '{args.project}' (projects: {names}); create it with `doctune ingest`")
    _emit(args, stats, _print_stats)
    return 0


def _print_stats(s: dict) -> None:
    print(f"project {s['project']}: {s['files']} files, {s['chunks']} chunks, {s['tokens']} tokens "
          f"(counted by {', '.join(s['token_counter']) or '-'})")
    print("  files by kind: " + (", ".join(f"{k} {v}" for k, v in s["files_by_kind"].items()) or "none"))
    print("  skipped: " + (", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"))
    if s["gone"]:
        print(f"  gone (deleted since an earlier ingest): {s['gone']}")
    t = s["tokens_per_chunk"]
    if s["chunks"]:
        print(f"  tokens per chunk: min {t['min']}, p50 {t['p50']:.0f}, p90 {t['p90']:.0f}, max {t['max']}, "
              f"mean {t['mean']}")
        width = max(t["histogram"].values()) or 1
        for bucket, n in t["histogram"].items():
            print(f"    {bucket:>10} {'#' * round(40 * n / width):<40} {n}")


def cmd_projects(args) -> int:
    rows = _connect(args).projects()
    _emit(args, rows, lambda rs: print("\n".join(
        f"{r['name']:<20} {r['files']:>6} files {r['chunks']:>7} chunks  {r['root']}" for r in rs) or "no projects"))
    return 0


def cmd_runs(args) -> int:
    rows = _connect(args).runs(args.project, args.limit)
    out = [{"id": r["run_id"], "kind": r["kind"], "status": r["status"], "project": r["project"],
            "created_at": r["created_at"], "summary": r["summary"], "error": r["error"]} for r in rows]
    _emit(args, out, lambda rs: print("\n".join(
        f"{r['id']:<36} {r['kind']:<8} {r['status']:<10} {r['project'] or '':<12} {r['created_at']:%Y-%m-%d %H:%M}"
        for r in rs) or "no runs"))
    return 0


def cmd_demo(args) -> int:
    from backend.config import SAMPLE_REPO, IngestConfig

    client = _connect(args)
    if not args.json:
        print(f"DocTune demo: ingesting the bundled sample repository {SAMPLE_REPO}")
    report = _run_ingest(client, SAMPLE_REPO, args.project, IngestConfig(), quiet=args.json)
    stats = client.stats(args.project)
    if args.json:
        print(json.dumps({"ingest": report.as_dict(), "stats": stats}, indent=2, default=str))
    else:
        _print_ingest(report.as_dict())
        _print_stats(stats)
        print("next stages (synthesis, training, evaluation, dashboard) arrive with their issues")
    return 0


COMMANDS = {"ingest": cmd_ingest, "stats": cmd_stats, "projects": cmd_projects, "runs": cmd_runs,
            "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
