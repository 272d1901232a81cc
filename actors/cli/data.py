"""Commands that make and ship the dataset: `synth`, `curate`, `datasets`, `export`, `dead-letters`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from backend.config import ConfigError
from backend.synth_config import SynthConfig
from actors.cli.common import add_project_view, connect, emit
from actors.printers import (print_curated, print_datasets, print_dead_letters, print_export, print_synth,
                             progress_bar)

if TYPE_CHECKING:
    from backend.curate import CurateConfig


def add_commands(sub) -> None:
    sy = sub.add_parser("synth", help="generate instruction samples from a project's chunks")
    sy.add_argument("--project", required=True)
    sy.add_argument("--config", default=None, help="YAML file of SynthConfig settings (see README)")
    sy.add_argument("--generator", choices=["heuristic", "openai"], default=None)
    sy.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default DeepSeek)")
    sy.add_argument("--model", default=None, help="model name (default deepseek-chat, i.e. DeepSeek V3)")
    sy.add_argument("--concurrency", type=int, default=None, help="requests in flight at most")
    sy.add_argument("--rpm", type=int, default=None, help="requests per minute allowed")
    sy.add_argument("--tpm", type=int, default=None, help="tokens per minute allowed")
    sy.add_argument("--language", choices=["en", "zh"], default=None)
    sy.add_argument("--max-chunks", type=int, default=None, help="use only the first N chunks (a trial run)")
    sy.add_argument("--dry-run", action="store_true", help="print the plan and its cost estimate; send nothing")
    sy.add_argument("--max-cost", type=float, default=None, metavar="USD", help="stop cleanly before passing this")
    sy.add_argument("--retry-failed", action="store_true", help="retry only the dead letters of the last run")
    sy.add_argument("--new", action="store_true", help="start a new run even if an unfinished one could resume")
    sy.add_argument("--json", action="store_true")
    sy.set_defaults(func=cmd_synth)

    cu = sub.add_parser("curate", help="curate a synthesis run's samples into a new dataset version")
    cu.add_argument("--project", required=True)
    cu.add_argument("--run", action="append", default=[], help="synthesis run(s) (default: the latest)")
    cu.add_argument("--judge", action="store_true", help="score samples with the LLM judge (--config endpoint)")
    cu.add_argument("--judge-threshold", type=float, default=None, help="drop samples the judge scored below")
    cu.add_argument("--near-dup-threshold", type=float, default=None, help="Jaccard above which samples are dups")
    cu.add_argument("--exec-check", action="store_true", help="run code samples against the repository")
    cu.add_argument("--config", default=None, help="YAML with `curate:` and `synth:` sections")
    cu.add_argument("--json", action="store_true")
    cu.set_defaults(func=cmd_curate)

    add_project_view(sub, "datasets", "dataset versions with sample counts per split", cmd_datasets)

    ex = sub.add_parser("export", help="write a dataset version as Alpaca, ShareGPT, OpenAI messages or Parquet")
    ex.add_argument("--project", required=True)
    ex.add_argument("--dataset", default=None, help="version (default: the latest)")
    ex.add_argument("--format", required=True, choices=["alpaca", "sharegpt", "openai", "parquet"])
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--system-prompt", default=None)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export)

    add_project_view(sub, "dead-letters", "units that kept failing, with their reasons", cmd_dead_letters)


def cmd_synth(args) -> int:
    cfg = _synth_config(args).validate()
    client = connect(args)
    with progress_bar("synthesizing", args.json) as on_progress:
        summary = client.synth(args.project, cfg, retry_failed=args.retry_failed, new_run=args.new,
                               dry_run=args.dry_run, on_progress=on_progress)
    emit(args, summary, print_synth)
    return 0 if summary.get("dry_run") or summary["status"] in {"succeeded", "budget_stopped"} else 1


def _synth_config(args) -> SynthConfig:
    cfg = SynthConfig.from_file(args.config) if args.config else SynthConfig()
    for flag, name in (("generator", "generator"), ("base_url", "base_url"), ("model", "model"),
                       ("concurrency", "concurrency"), ("rpm", "rpm"), ("tpm", "tpm"), ("language", "language"),
                       ("max_chunks", "max_chunks"), ("max_cost", "max_cost_usd")):
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg, name, value)
    if args.config is None and args.base_url and args.generator is None:
        cfg.generator = "openai"  # an endpoint given on the command line means: use it
    return cfg


def cmd_curate(args) -> int:
    cfg, judge = _curate_configs(args)
    emit(args, connect(args).curate(args.project, args.run, cfg, judge_cfg=judge), print_curated)
    return 0


def _curate_configs(args) -> tuple[CurateConfig, SynthConfig | None]:
    """The curation settings (file, then flags) and, with --judge, the judge's endpoint from the file's `synth:`."""
    # backend.curate imports numpy: loaded when curating, so `doctune --help` stays fast
    from backend.curate import CurateConfig

    data = yaml.safe_load(open(args.config)) if args.config else {}
    try:
        cfg = CurateConfig(**(data.get("curate") or {}))
        if args.judge_threshold is not None:
            cfg.judge_threshold = args.judge_threshold
        if args.near_dup_threshold is not None:
            cfg.near_dup_threshold = args.near_dup_threshold
        cfg.exec_check = cfg.exec_check or args.exec_check
        cfg.validate()
        # the judge is always an API endpoint: a `generator:` in the file is overridden, not a clash
        judge = SynthConfig(**{**(data.get("synth") or {}), "generator": "openai"}).validate() if args.judge else None
    except TypeError as exc:  # a setting the file names that the dataclass does not have, or of the wrong type
        raise ConfigError([f"{args.config}: {exc}"]) from None
    return cfg, judge


def cmd_datasets(args) -> int:
    rows = connect(args).datasets(args.project)
    out = [{"version": r["version"], "samples": r["samples"], "splits": r["splits"], "source_runs": r["source_runs"],
            "created_at": r["created_at"], "note": r["note"], "stats": r["stats"]} for r in rows]
    emit(args, out, print_datasets)
    return 0


def cmd_export(args) -> int:
    exported = connect(args).export(args.project, args.format, args.out, version=args.dataset,
                                    system_prompt=args.system_prompt)
    emit(args, exported, lambda d: print_export(d, args.project))
    return 0


def cmd_dead_letters(args) -> int:
    emit(args, connect(args).dead_letters(args.project), print_dead_letters)
    return 0
