"""Commands that make and ship the dataset: `synth`, `refresh`, `curate`, `datasets`, `review`, `export`,
`dead-letters`."""

from __future__ import annotations

from pathlib import Path

from backend.config_base import add_config_flags, apply_config_flags, read_yaml
from backend.curate_config import CurateConfig
from backend.export_config import ExportConfig
from backend.review import read_review_file
from backend.synth_config import SynthConfig
from actors.cli.common import UserError, add_project, add_project_view, config_source, connect, emit
from actors.printers import (print_curated, print_datasets, print_dead_letters, print_export, print_refresh,
                             print_review, print_synth, print_train, progress_bar)

# the config fields each command sets from its flags (flag names and help live with the fields)
SYNTH_FLAGS = ["generator", "endpoint.base_url", "endpoint.model", "endpoint.concurrency", "endpoint.rpm",
               "endpoint.tpm", "language", "max_chunks", "max_cost_usd", "target_samples"]
CURATE_FLAGS = ["judge_threshold", "near_dup_threshold", "exec_check"]
EXPORT_FLAGS = ["format", "out", "system_prompt", "force"]


def add_commands(sub) -> None:
    sy = sub.add_parser("synth", help="generate instruction samples from a project's chunks")
    add_project(sy, required=True)
    sy.add_argument("--config", default=None, help="YAML file of SynthConfig settings (see README)")
    add_config_flags(sy, SynthConfig, SYNTH_FLAGS)
    sy.add_argument("--dry-run", action="store_true", help="print the plan and its cost estimate; send nothing")
    sy.add_argument("--retry-failed", action="store_true", help="retry only the dead letters of the last run")
    sy.add_argument("--new", action="store_true", help="start a new run even if an unfinished one could resume")
    sy.add_argument("--json", action="store_true")
    sy.set_defaults(func=cmd_synth)

    rf = sub.add_parser("refresh", help="after the repository changed: re-ingest, synthesize only what changed, "
                                        "curate the next dataset version")
    add_project(rf, required=True)
    rf.add_argument("--config", default=None,
                    help="YAML file of SynthConfig settings (default: those of the version's synthesis run)")
    rf.add_argument("--dry-run", action="store_true",
                    help="print the files changed, the samples to retire and the requests and cost; change nothing")
    rf.add_argument("--train", action="store_true",
                    help="then continue the project's latest adapter on the new version (as `doctune train --from`)")
    rf.add_argument("--json", action="store_true")
    rf.set_defaults(func=cmd_refresh)

    cu = sub.add_parser("curate", help="curate a synthesis run's samples into a new dataset version")
    add_project(cu, required=True)
    cu.add_argument("--run", action="append", default=[], help="synthesis run(s) (default: the latest)")
    cu.add_argument("--judge", action="store_true", help="score samples with the LLM judge (--config endpoint)")
    add_config_flags(cu, CurateConfig, CURATE_FLAGS)
    cu.add_argument("--config", default=None, help="YAML with `curate:` and `synth:` sections")
    cu.add_argument("--json", action="store_true")
    cu.set_defaults(func=cmd_curate)

    add_project_view(sub, "datasets", "dataset versions with their lineage and sample counts per split", cmd_datasets)

    rv = sub.add_parser("review", help="apply edits and rejections from a JSONL file as a new dataset version")
    add_project(rv, required=True)
    rv.add_argument("--file", required=True, type=Path,
                    help='JSONL, one sample a line: {"sample_id": ..., "output": ...} (also instruction, input, '
                         'messages) or {"sample_id": ..., "reject": true}')
    rv.add_argument("--dataset", default=None, help="version to review (default: the current one)")
    rv.add_argument("--note", default=None, help="why (stored on the new version)")
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(func=cmd_review)

    ex = sub.add_parser("export", help="write a dataset version as Alpaca, ShareGPT, OpenAI messages or Parquet")
    add_project(ex, required=True)
    ex.add_argument("--dataset", default=None, help="version (default: the current one)")
    add_config_flags(ex, ExportConfig, EXPORT_FLAGS)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export)

    add_project_view(sub, "dead-letters", "units that kept failing, with their reasons", cmd_dead_letters)


def cmd_synth(args) -> int:
    cfg = _synth_config(args).validate(config_source(args.config))
    client = connect(args)
    with progress_bar("synthesizing", args.json) as on_progress:
        summary = client.synth(args.project, cfg, retry_failed=args.retry_failed, new_run=args.new,
                               dry_run=args.dry_run, on_progress=on_progress)
    emit(args, summary, print_synth)
    return 0 if summary.get("dry_run") or summary["status"] in {"completed", "budget_stopped"} else 1


def cmd_refresh(args) -> int:
    cfg = SynthConfig.from_file(args.config).validate(config_source(args.config)) if args.config else None
    client = connect(args)
    parent = client.latest_adapter_run(args.project) if args.train else None
    if args.train and parent is None:  # checked first: a refresh that cannot train as asked is not started
        raise UserError(f"--train continues the latest completed training run of project '{args.project}', and it "
                        f"has none with its adapter on disk: refresh without --train, then `doctune train --project "
                        f"{args.project}`")
    with progress_bar("synthesizing", args.json) as on_progress:
        summary = client.refresh(args.project, cfg, dry_run=args.dry_run, on_progress=on_progress)
    summary["continues"] = parent
    if parent and summary["dataset"]:
        with progress_bar("training", args.json) as on_progress:
            summary["train"] = client.train_from(parent, version=summary["dataset"], on_progress=on_progress)
    emit(args, summary, _print_refresh_and_train)
    ok = summary["dry_run"] or summary["nothing_changed"] or summary["dataset"]
    return 0 if ok and summary.get("train", {"status": "completed"})["status"] in {"completed", "cancelled"} else 1


def _print_refresh_and_train(s: dict) -> None:
    print_refresh(s)
    if s["continues"] and s["dry_run"]:
        print(f"  --train would then continue run {s['continues']}'s adapter on the new version")
    elif s["continues"] and not s.get("train"):
        print(f"  no training: there is no new version for run {s['continues']}'s adapter to learn")
    elif s.get("train"):
        print(f"continuing run {s['continues']}'s adapter on {s['dataset']}:")
        print_train(s["train"])


def _synth_config(args) -> SynthConfig:
    cfg = SynthConfig.from_file(args.config) if args.config else SynthConfig()
    apply_config_flags(cfg, args, SYNTH_FLAGS)
    if args.config is None and getattr(args, "endpoint.base_url") and args.generator is None:
        cfg.generator = "openai"  # an endpoint given on the command line means: use it
    return cfg


def cmd_curate(args) -> int:
    cfg, judge = _curate_configs(args)
    emit(args, connect(args).curate(args.project, args.run, cfg, judge_cfg=judge), print_curated)
    return 0


def _curate_configs(args) -> tuple[CurateConfig, SynthConfig | None]:
    """The curation settings (file, then flags) and, with --judge, the judge's endpoint from the file's `synth:`."""
    data = (read_yaml(args.config) or {}) if args.config else {}
    source = config_source(args.config)
    cfg = apply_config_flags(CurateConfig.from_dict(data.get("curate"), args.config or "--config"), args,
                             CURATE_FLAGS).validate(source)
    judge = None
    if args.judge:
        judge = SynthConfig.from_dict(data.get("synth"), args.config or "--config")
        judge.generator = "openai"  # the judge is always an API endpoint: a `generator:` in the file is no clash
        judge.validate(source)
    return cfg, judge


def cmd_datasets(args) -> int:
    rows = connect(args).datasets(args.project)
    out = [{"version": r["version"], "parent": r["parent"], "operation": r["operation"], "current": r["current"],
            "samples": r["samples"], "splits": r["splits"], "source_runs": r["source_runs"],
            "created_at": r["created_at"], "note": r["note"], "stats": r["stats"]} for r in rows]
    emit(args, out, print_datasets)
    return 0


def cmd_review(args) -> int:
    from ray.exceptions import RayTaskError  # loaded by the command that talks to the store

    lines = read_review_file(args.file)  # a bad file is refused before Ray starts
    client = connect(args)
    if args.project not in {p["name"] for p in client.projects()}:
        raise KeyError(args.project)
    try:
        result = client.review(args.project, lines, version=args.dataset, note=args.note, source=str(args.file))
    except RayTaskError as exc:  # the store refused it (its own message says what): said with the file, in one line
        if not isinstance(exc.cause, (KeyError, ValueError)):
            raise
        hint = (f"; take sample ids from `doctune export --project {args.project} --format parquet` (column "
                "sample_id) and versions from `doctune datasets`") if isinstance(exc.cause, KeyError) else ""
        raise UserError(f"{args.file}: {exc.cause.args[0]}{hint}") from None
    emit(args, result, print_review)
    return 0


def cmd_export(args) -> int:
    from backend.export import check_destination  # pyarrow: loaded by the command that writes files

    cfg = apply_config_flags(ExportConfig(), args, EXPORT_FLAGS).validate()
    check_destination(Path(cfg.out), cfg.force)  # before Ray starts; the client checks again as it writes
    exported = connect(args).export(args.project, cfg, version=args.dataset)
    emit(args, exported, lambda d: print_export(d, args.project))
    return 0


def cmd_dead_letters(args) -> int:
    emit(args, connect(args).dead_letters(args.project), print_dead_letters)
    return 0
