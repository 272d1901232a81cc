"""Commands that judge the models: `eval`, `eval-show`, `models`, `eval-matrix`."""

from __future__ import annotations

from backend.base_models import list_models
from backend.config import resolve_home
from backend.config_base import add_config_flags, apply_config_flags
from backend.eval_config import EvalConfig
from backend.synth_config import SynthConfig
from actors.cli.common import UserError, config_source, connect, emit
from actors.printers import eval_document, print_eval, print_eval_matrix, print_models


EVAL_FLAGS = ["split", "limit", "max_new_tokens", "batch_size", "judge", "endpoint.base_url", "endpoint.model"]


def add_commands(sub) -> None:
    ev = sub.add_parser("eval", help="base against tuned on the held-out split, the knowledge probes and the "
                                     "retention set: metrics, intervals, judge")
    ev.add_argument("--run", required=True, help="a completed training run")
    ev.add_argument("--against", default=None, metavar="PREV",
                    help="also compare with an earlier adapter of the project on the prompts of changed and unchanged "
                         "files (default: the run's parent, when it continued one with `train --from`)")
    add_config_flags(ev, EvalConfig, EVAL_FLAGS)
    ev.add_argument("--config", default=None, help="YAML of SynthConfig settings for the judge endpoint")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    es = sub.add_parser("eval-show", help="print a stored evaluation again, without recomputing it")
    es.add_argument("eval_run", help="an evaluation run (see `doctune runs`)")
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_eval_show)

    mo = sub.add_parser("models", help="the base models this machine has (nothing is downloaded)")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_models)

    em = sub.add_parser("eval-matrix", help="base and several adapters on one frozen eval set, in one table")
    em.add_argument("--runs", nargs="+", required=True, help="training runs (each evaluated on the same prompts)")
    em.add_argument("--set", default="test", help="eval set: the split, or retention")
    em.add_argument("--json", action="store_true")
    em.set_defaults(func=cmd_eval_matrix)


def cmd_eval(args) -> int:
    cfg = _eval_config(args)  # before Ray starts: a mistake in the file or a flag costs no wait
    result = connect(args).evaluate(args.run, cfg, against=args.against)
    emit(args, eval_document(result), print_eval)
    return 0 if result["status"] == "completed" else 1


def _eval_config(args) -> EvalConfig:
    """The flags over the defaults; the judge's endpoint from a synthesis config's `--config`, then the flags."""
    cfg = EvalConfig()
    if args.config:
        cfg.endpoint = SynthConfig.from_file(args.config).endpoint
    return apply_config_flags(cfg, args, EVAL_FLAGS).validate(config_source(args.config))


def cmd_eval_show(args) -> int:
    try:
        run = connect(args).run(args.eval_run)
    except KeyError:
        run = None
    if run is None or run["kind"] != "eval":
        raise UserError(f"no evaluation run '{args.eval_run}'; list them with `doctune runs`")
    result = {"run_id": run["run_id"], "status": run["status"], "error": run["error"], **(run["summary"] or {})}
    emit(args, eval_document(result), print_eval)
    return 0


def cmd_models(args) -> int:
    emit(args, list_models(resolve_home(args.home)), print_models)
    return 0


def cmd_eval_matrix(args) -> int:
    emit(args, connect(args).comparison_matrix(args.runs, args.set), print_eval_matrix)
    return 0
