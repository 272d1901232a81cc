"""Commands on training runs: `train`, `cancel`, `runs`, `merge`, `export-model`, `config show`."""

from __future__ import annotations

from backend.config import resolve_home
from backend.config_base import add_config_flags, apply_config_flags
from backend.train_config import TrainConfig, load_preset
from actors.cli.common import UserError, add_project, cluster_named, config_source, connect, emit
from actors.printers import (print_cancelled, print_exported, print_merged, print_runs, print_train,
                             print_train_config, progress_bar)
from actors.runtime import live_cluster_address, start_local_cluster


TRAIN_FLAGS = ["training.max_steps"]  # --preset picks the preset file the config starts from, so it is its own


def add_commands(sub) -> None:
    tr = sub.add_parser("train", help="train a LoRA adapter on a dataset version (one GPU actor per run)")
    add_project(tr, default=None)
    tr.add_argument("--dataset", default=None, help="version (default: the project's current one)")
    tr.add_argument("--preset", default=None, help="seed, smol, tiny, qwen2.5-coder-1.5b, ... (default: seed with a "
                                                    "GPU, smol without)")
    tr.add_argument("--config", default=None, help="YAML overriding a preset (see README)")
    add_config_flags(tr, TrainConfig, TRAIN_FLAGS)
    tr.add_argument("--resume", default=None, metavar="RUN", help="continue a run from its last checkpoint")
    tr.add_argument("--from", dest="from_run", default=None, metavar="RUN",
                    help="a new run continuing a completed run's adapter on --dataset (default: the project's "
                         "current version), with that run's settings unless --preset/--config name the same base")
    tr.add_argument("--detach", action="store_true", help="return at once; the run goes on in this home's cluster")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_train)

    ca = sub.add_parser("cancel", help="stop a run (training saves a checkpoint first)")
    ca.add_argument("run")
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=cmd_cancel)

    ru = sub.add_parser("runs", help="list runs (ingest, synthesis, training, evaluation)")
    add_project(ru, default=None)
    ru.add_argument("--limit", type=int, default=50)
    ru.add_argument("--json", action="store_true")
    ru.set_defaults(func=cmd_runs)

    me = sub.add_parser("merge", help="merge a run's adapter into its base model (16-bit), optionally GGUF")
    me.add_argument("run")
    me.add_argument("--out", default=None, help="output folder (default: the run folder)")
    me.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    add_gguf_flags(me)
    me.add_argument("--json", action="store_true")
    me.set_defaults(func=cmd_merge)

    ex = sub.add_parser("export-model", help="a bundle for vLLM and Ollama: merged model, adapter, README with the "
                                             "commands, Modelfile, manifest; checked against the evaluation")
    ex.add_argument("run")
    ex.add_argument("--out", required=True, help="the bundle's folder (created when missing)")
    ex.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="of the merged model")
    add_gguf_flags(ex)
    ex.add_argument("--no-verify", action="store_true",
                    help="skip replaying the latest evaluation's prompts through the merged model")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export_model)

    co = sub.add_parser("config", help="show resolved configurations")
    co_sub = co.add_subparsers(dest="config_command", required=True)
    cs = co_sub.add_parser("show", help="the model, LoRA and training arguments of a preset")
    cs.add_argument("--preset", default="seed")
    cs.add_argument("--config", default=None, help="a YAML overriding a preset")
    cs.add_argument("--json", action="store_true")
    co.set_defaults(func=cmd_config)


def add_gguf_flags(parser) -> None:
    parser.add_argument("--gguf", action="store_true",
                        help="also write GGUF with llama.cpp's converter (CPU; llama.cpp from --llama-cpp, "
                             "UNSLOTH_LLAMA_CPP_PATH or ~/.unsloth/llama.cpp)")
    parser.add_argument("--llama-cpp", default=None, metavar="DIR", help="the llama.cpp checkout to convert with")
    parser.add_argument("--gguf-type", default=None, metavar="TYPE",
                        help="f16, bf16, q8_0, f32, or with llama-quantize built q4_k_m, q5_k_m, ... (default: "
                             "q4_k_m where llama-quantize is built, else q8_0)")


def cmd_train(args) -> int:
    if args.resume is None and args.project is None and args.from_run is None:
        raise UserError("name a --project to train, --from RUN to continue a run's adapter, or --resume RUN")
    if args.resume and args.from_run:
        raise UserError("--resume finishes an unfinished run, --from starts a new one from a completed run's "
                        "adapter: pass one of them")
    # a named file or preset is checked before Ray starts, so a mistake in it costs no wait
    cfg = _train_config(args) if args.resume is None and (args.config or args.preset) else None
    if args.detach and not cluster_named(args):
        start_local_cluster(resolve_home(args.home))  # the run must outlive this command
    client = connect(args)
    if args.from_run and cfg is None:  # the parent's settings, with this command's flags over them
        cfg = apply_config_flags(client.continue_config(args.from_run), args, TRAIN_FLAGS).validate()
    elif args.resume is None and cfg is None:
        cfg = _train_config(args, gpu=client.cluster_has_gpu())
    with progress_bar("training", args.json) as on_progress:
        if args.from_run:
            result = client.train_from(args.from_run, cfg, version=args.dataset, wait=not args.detach,
                                       on_progress=on_progress)
        else:
            result = client.train(args.project, cfg, version=args.dataset, resume_run=args.resume,
                                  wait=not args.detach, on_progress=on_progress)
    emit(args, result, print_train)
    return 0 if result["status"] in {"completed", "cancelled", "queued"} else 1


def _train_config(args, gpu: bool = False) -> TrainConfig:
    """The --config file, else the --preset (by default: seed with a GPU, smol without), then the flags; checked."""
    cfg = TrainConfig.from_file(args.config) if args.config else load_preset(args.preset or ("seed" if gpu else "smol"))
    return apply_config_flags(cfg, args, TRAIN_FLAGS).validate(config_source(args.config))


def cmd_cancel(args) -> int:
    state = connect(args).cancel(args.run)
    if state not in {"cancelling", "cancelled"} and not live_cluster_address(resolve_home(args.home)):
        state += " (no cluster holds runs for this home)"
    emit(args, {"run_id": args.run, "state": state}, print_cancelled)
    return 0


def cmd_runs(args) -> int:
    rows = connect(args).runs(args.project, args.limit)
    out = [{"id": r["run_id"], "kind": r["kind"], "status": r["status"], "project": r["project"],
            "created_at": r["created_at"], "summary": r["summary"], "error": r["error"]} for r in rows]
    emit(args, out, print_runs)
    return 0


def cmd_merge(args) -> int:
    emit(args, connect(args).merge(args.run, args.out, args.dtype, args.gguf, llama_cpp=args.llama_cpp,
                                   gguf_type=args.gguf_type), print_merged)
    return 0


def cmd_export_model(args) -> int:
    result = connect(args).export_model(args.run, args.out, dtype=args.dtype, gguf=args.gguf,
                                        verify=not args.no_verify, llama_cpp=args.llama_cpp, gguf_type=args.gguf_type)
    emit(args, result, print_exported)
    return 1 if result["verify"].get("passed") is False else 0


def cmd_config(args) -> int:
    cfg = _train_config(args)
    data = cfg.to_dict()
    data["effective_batch_size"] = cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    emit(args, data, print_train_config)
    return 0
