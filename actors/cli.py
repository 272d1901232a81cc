"""`doctune`: the command line. Heavy imports (Ray, DuckDB, langchain) happen inside commands,
so `doctune --help` answers at once."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


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

    cu = sub.add_parser("curate", help="curate a synthesis run's samples into a new dataset version")
    cu.add_argument("--project", required=True)
    cu.add_argument("--run", action="append", default=[], help="synthesis run(s) (default: the latest)")
    cu.add_argument("--judge", action="store_true", help="score samples with the LLM judge (--config endpoint)")
    cu.add_argument("--judge-threshold", type=float, default=None, help="drop samples the judge scored below")
    cu.add_argument("--near-dup-threshold", type=float, default=None, help="Jaccard above which samples are dups")
    cu.add_argument("--exec-check", action="store_true", help="run code samples against the repository")
    cu.add_argument("--config", default=None, help="YAML with `curate:` and `synth:` sections")
    cu.add_argument("--json", action="store_true")

    ds = sub.add_parser("datasets", help="dataset versions with sample counts per split")
    ds.add_argument("--project", required=True)
    ds.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="write a dataset version as Alpaca, ShareGPT, OpenAI messages or Parquet")
    ex.add_argument("--project", required=True)
    ex.add_argument("--dataset", default=None, help="version (default: the latest)")
    ex.add_argument("--format", required=True, choices=["alpaca", "sharegpt", "openai", "parquet"])
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--system-prompt", default=None)
    ex.add_argument("--json", action="store_true")

    dl = sub.add_parser("dead-letters", help="units that kept failing, with their reasons")
    dl.add_argument("--project", required=True)
    dl.add_argument("--json", action="store_true")

    tr = sub.add_parser("train", help="train a LoRA adapter on a dataset version (one GPU actor per run)")
    tr.add_argument("--project", default=None)
    tr.add_argument("--dataset", default=None, help="version (default: the project's latest)")
    tr.add_argument("--preset", default=None, help="seed, smol, tiny, qwen2.5-coder-1.5b, ... (default: seed with a "
                                                    "GPU, smol without)")
    tr.add_argument("--config", default=None, help="YAML overriding a preset (see README)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    tr.add_argument("--resume", default=None, metavar="RUN", help="continue a run from its last checkpoint")
    tr.add_argument("--detach", action="store_true", help="return at once; the run goes on in this home's cluster")
    tr.add_argument("--json", action="store_true")

    ca = sub.add_parser("cancel", help="stop a run (training saves a checkpoint first)")
    ca.add_argument("run")
    ca.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", help="base against tuned on the held-out split, the knowledge probes and the "
                                     "retention set: metrics, intervals, judge")
    ev.add_argument("--run", required=True, help="a completed training run")
    ev.add_argument("--split", default="test")
    ev.add_argument("--judge", action=argparse.BooleanOptionalAction, default=False,
                    help="pairwise LLM judge, both orders (endpoint: --base-url/--model or --config)")
    ev.add_argument("--base-url", default=None, help="judge endpoint (default DeepSeek)")
    ev.add_argument("--model", default=None, help="judge model")
    ev.add_argument("--config", default=None, help="YAML of SynthConfig settings for the judge endpoint")
    ev.add_argument("--limit", type=int, default=None,
                    help="evaluate the first N prompts of each set (held-out split, knowledge probes, retention)")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--json", action="store_true")

    es = sub.add_parser("eval-show", help="print a stored evaluation again, without recomputing it")
    es.add_argument("eval_run", help="an evaluation run (see `doctune runs`)")
    es.add_argument("--json", action="store_true")

    mo = sub.add_parser("models", help="the base models this machine has (nothing is downloaded)")
    mo.add_argument("--json", action="store_true")

    em = sub.add_parser("eval-matrix", help="base and several adapters on one frozen eval set, in one table")
    em.add_argument("--runs", nargs="+", required=True, help="training runs (each evaluated on the same prompts)")
    em.add_argument("--set", default="test", help="eval set: the split, or retention")
    em.add_argument("--json", action="store_true")

    me = sub.add_parser("merge", help="merge a run's adapter into its base model (16-bit), optionally GGUF")
    me.add_argument("run")
    me.add_argument("--out", default=None, help="output folder (default: the run folder)")
    me.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    me.add_argument("--gguf", action="store_true", help="also write GGUF (needs CUDA and Unsloth)")
    me.add_argument("--json", action="store_true")

    co = sub.add_parser("config", help="show resolved configurations")
    co_sub = co.add_subparsers(dest="config_command", required=True)
    cs = co_sub.add_parser("show", help="the model, LoRA and training arguments of a preset")
    cs.add_argument("--preset", default="seed")
    cs.add_argument("--config", default=None, help="a YAML overriding a preset")
    cs.add_argument("--json", action="store_true")

    cl = sub.add_parser("cluster", help="a Ray cluster for this home that outlives commands")
    cl.add_argument("action", choices=["start", "stop", "status"])
    cl.add_argument("--num-cpus", type=int, default=None)
    cl.add_argument("--json", action="store_true")

    da = sub.add_parser("dashboard", help="the team dashboard (Streamlit) on this home's runs and datasets")
    da.add_argument("--host", default="127.0.0.1",
                    help="address to bind; anything but loopback needs DOCTUNE_DASHBOARD_PASSWORD or "
                         "DOCTUNE_DASHBOARD_AUTH=oidc")
    da.add_argument("--port", type=int, default=8501)
    da.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster it starts")

    de = sub.add_parser("demo", help="run the pipeline on the bundled sample repository")
    de.add_argument("--project", default="sample")
    de.add_argument("--no-dashboard", action="store_true", help="stop after printing the summary")
    de.add_argument("--host", default="127.0.0.1", help="the dashboard's address (as for `doctune dashboard`)")
    de.add_argument("--port", type=int, default=8501)
    de.add_argument("--base-url", default=None, help="with a key set: the endpoint to synthesize with "
                                                     "(default DeepSeek)")
    de.add_argument("--model", default=None, help="with a key set: the generator model (default deepseek-chat)")
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


def _synth_config(args):
    from backend.synth_config import SynthConfig

    cfg = SynthConfig.from_file(args.config) if args.config else SynthConfig()
    for flag, name in (("generator", "generator"), ("base_url", "base_url"), ("model", "model"),
                       ("concurrency", "concurrency"), ("rpm", "rpm"), ("tpm", "tpm"), ("language", "language"),
                       ("max_chunks", "max_chunks"), ("max_cost", "max_cost_usd")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(cfg, name, value)
    if args.config is None and getattr(args, "base_url", None) and getattr(args, "generator", None) is None:
        cfg.generator = "openai"  # an endpoint given on the command line means: use it
    return cfg


def cmd_synth(args) -> int:
    from backend.config import ConfigError

    try:
        cfg = _synth_config(args).validate()
    except ConfigError as exc:
        raise _UserError(str(exc)) from None
    client = _connect(args)
    on_progress, close = _progress_bar("synthesizing", args.json)
    try:
        summary = client.synth(args.project, cfg, retry_failed=args.retry_failed, new_run=args.new,
                               dry_run=args.dry_run, on_progress=on_progress)
    except KeyError:
        raise _UserError(f"no project '{args.project}'; create it with `doctune ingest PATH --project "
                         f"{args.project}`") from None
    except (ValueError, ConfigError) as exc:
        raise _UserError(str(exc)) from None
    finally:
        close()
    _emit(args, summary, _print_synth)
    return 0 if summary.get("dry_run") or summary["status"] in {"succeeded", "budget_stopped"} else 1


def _print_synth(s: dict) -> None:
    e = s["estimate"]
    cost = f"${e['cost_usd']:.4f}" if e["cost_usd"] is not None else "unknown (no price for this model)"
    if s.get("dry_run"):
        print(f"plan for project '{s['project']}': {s['units']} requests in all, {s['done_before']} already done, "
              f"{s['cached']} answered from the cache" + (f" (resuming {s['run_id']})" if s["resuming"] else ""))
        print(f"  to send: {e['requests']} requests to {e['model']}, ~{e['tokens_in']} tokens in, "
              f"~{e['tokens_out']} out, estimated cost {cost}")
        return
    print(f"run {s['run_id']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else ""))
    print(f"  units: {s['done']} done, {s['cached']} from cache, {s['failed']} dead letters, "
          f"{s['done_before']} done before; samples: {s['samples']}")
    print(f"  requests: {s['requests']} ({s['http_429']} answered 429); tokens {s['tokens_in']} in, "
          f"{s['tokens_out']} out; cost ${s['cost_usd']:.4f}")
    if s.get("dataset"):
        print(f"  curated into dataset version {s['dataset']}")
    if s["dead_letters"]:
        reasons = ", ".join(f"{k} {v}" for k, v in s["dead_reasons"].items())
        print(f"  {s['dead_letters']} dead letters ({reasons}): `doctune dead-letters --project {s['project']}`")
        if set(s["dead_reasons"]) == {"no_samples"}:
            print("    no_samples: the offline heuristic found nothing to derive from those chunks; "
                  "an LLM generator (--generator openai) covers them")
        else:
            print(f"    once the cause is fixed: `doctune synth --project {s['project']} --retry-failed`")


def cmd_curate(args) -> int:
    import yaml

    from backend.config import ConfigError
    from backend.curate import CurateConfig
    from backend.synth_config import SynthConfig

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
    except (ConfigError, TypeError) as exc:
        raise _UserError(str(exc)) from None
    try:
        info = _connect(args).curate(args.project, args.run, cfg, judge_cfg=judge)
    except ValueError as exc:
        raise _UserError(str(exc)) from None
    _emit(args, info, lambda d: print(f"dataset {d['version']}: {d['samples']} samples "
                                      f"({', '.join(f'{k} {v}' for k, v in sorted(d['splits'].items()))}); "
                                      f"dropped {d['stats'].get('dropped', 0)}"))
    return 0


def cmd_datasets(args) -> int:
    rows = _connect(args).datasets(args.project)
    out = [{"version": r["version"], "samples": r["samples"], "splits": r["splits"], "source_runs": r["source_runs"],
            "created_at": r["created_at"], "note": r["note"], "stats": r["stats"]} for r in rows]
    _emit(args, out, lambda rs: print("\n".join(
        f"{r['version']:<5} {r['samples']:>6} samples  " + ", ".join(f"{k} {v}" for k, v in sorted(r["splits"].items()))
        + f"  from {', '.join(r['source_runs'] or [])}" for r in rs) or "no dataset versions yet"))
    return 0


def cmd_export(args) -> int:
    try:
        exported = _connect(args).export(args.project, args.format, args.out, version=args.dataset,
                                         system_prompt=args.system_prompt)
    except ValueError as exc:
        raise _UserError(str(exc)) from None
    _emit(args, exported, lambda d: print(f"exported {args.project} {d['version']} as {args.format}:\n" + "\n".join(
        f"  {p}" for p in d["files"])))
    return 0


def cmd_dead_letters(args) -> int:
    rows = _connect(args).dead_letters(args.project)
    _emit(args, rows, lambda rs: print("\n".join(
        f"{r['run_id']}  {r['task']:<10} {r['reason']:<12} chunk {r['chunk_id']}  {(r['detail'] or '')[:80]}"
        for r in rs) or "no dead letters"))
    return 0


def _train_config(args, gpu: bool):
    from backend.train_config import TrainConfig, load_preset

    if args.config:
        cfg = TrainConfig.from_file(args.config)
    else:
        cfg = load_preset(args.preset or ("seed" if gpu else "smol"))
    if getattr(args, "max_steps", None) is not None:
        cfg.training.max_steps = args.max_steps
    return cfg


def cmd_train(args) -> int:
    import ray

    from backend.config import ConfigError, resolve_home
    from actors.runtime import start_local_cluster

    if args.resume is None and args.project is None:
        raise _UserError("name a --project to train, or --resume RUN")
    if args.detach and not (args.ray_address or os.environ.get("RAY_ADDRESS")):
        start_local_cluster(resolve_home(args.home))  # the run must outlive this command
    client = _connect(args)
    on_progress, close = _progress_bar("training", args.json)
    try:
        cfg = None if args.resume else _train_config(args, ray.cluster_resources().get("GPU", 0) >= 1)
        result = client.train(args.project, cfg, version=args.dataset, resume_run=args.resume,
                              wait=not args.detach, on_progress=on_progress)
    except KeyError:
        raise _UserError(f"no project '{args.project}'") from None
    except (ValueError, ConfigError) as exc:
        raise _UserError(str(exc)) from None
    finally:
        close()
    _emit(args, result, _print_train)
    return 0 if result["status"] in {"completed", "cancelled", "queued"} else 1


def _progress_bar(stage: str, quiet: bool):
    """(on_progress, close) for a run's progress callbacks: a tqdm bar on stderr (nothing when quiet).

    Synthesis reports units (done, failed, requests/min, 429s, tokens, cost); training steps and losses;
    evaluation the prompts generated."""
    bar = None

    def on_progress(p: dict) -> None:
        nonlocal bar
        if quiet:
            return
        from tqdm import tqdm

        if stage == "synthesizing":
            if bar is None:
                bar = tqdm(total=max(0, p["units"] - p["skipped"]), unit="req", desc=stage, file=sys.stderr)
            bar.n = p["done"] + p["failed"]
            bar.set_postfix(done=p["done"], failed=p["failed"], rpm=p["rpm"], r429=p["http_429"],
                            tokens=p["tokens_in"] + p["tokens_out"], cost=f"${p['cost_usd']:.4f}", refresh=False)
        else:
            if bar is None:
                bar = tqdm(unit="step" if stage == "training" else "prompt", desc=stage, file=sys.stderr,
                           total=p.get("total") or p.get("max_steps"))
            bar.total = p.get("total") or bar.total
            bar.n = int(p.get("step", p.get("done", 0)) or 0)
            shown = {k: f"{p[k]:.4g}" for k in ("loss", "eval_loss", "learning_rate", "tokens_per_second")
                     if isinstance(p.get(k), (int, float))}
            bar.set_postfix(status=p.get("status", ""), **shown, refresh=False)
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return on_progress, close


def _print_train(r: dict) -> None:
    if r.get("detached"):
        print(f"run {r['run_id']} queued on dataset {r['dataset']}; watch it with `doctune runs`, "
              f"stop it with `doctune cancel {r['run_id']}`")
        return
    print(f"run {r['run_id']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else ""))
    if r.get("global_step") is not None:
        print(f"  steps {r['global_step']}, epochs {r['epochs']}, train loss {r['train_loss']}, "
              f"eval loss {r['eval_loss']}, {r.get('tokens_per_second') or 0:.0f} tokens/s")
    if r.get("adapter"):
        print(f"  adapter: {r['adapter']}")
    elif r.get("checkpoint"):
        print(f"  checkpoint: {r['checkpoint']} — continue with `doctune train --resume {r['run_id']}`")


def cmd_cancel(args) -> int:
    from backend.config import resolve_home
    from actors.runtime import live_cluster_address

    client = _connect(args)
    try:
        state = client.cancel(args.run)
    except ValueError as exc:
        raise _UserError(str(exc)) from None
    if state not in {"cancelling", "cancelled"} and not live_cluster_address(resolve_home(args.home)):
        state += " (no cluster holds runs for this home)"
    _emit(args, {"run_id": args.run, "state": state}, lambda d: print(f"{d['run_id']}: {d['state']}"))
    return 0


def cmd_eval(args) -> int:
    from backend.config import ConfigError
    from backend.synth_config import SynthConfig

    judge = None
    if args.judge:
        try:
            judge = SynthConfig.from_file(args.config) if args.config else SynthConfig()
            judge.generator = "openai"
            if args.base_url:
                judge.base_url = args.base_url
            if args.model:
                judge.model = args.model
            judge.validate()
        except ConfigError as exc:
            raise _UserError(str(exc)) from None
    client = _connect(args)
    try:
        result = client.evaluate(args.run, split=args.split, limit=args.limit, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, judge_cfg=judge)
    except ValueError as exc:
        raise _UserError(str(exc)) from None
    _emit(args, eval_document(result), _print_eval)
    return 0 if result["status"] == "completed" else 1


def eval_document(result: dict) -> dict:
    """An evaluation as machines read it: sets (the held-out split, `probe`, `retention`) → metric → `base`,
    `tuned`, `delta`, `ci` (two numbers), `n`, `better`; per set also `n` and `flips`."""
    sets = {}
    for name in result.get("sets") or [k for k in (result.get("split"), "retention") if k in result]:
        stats = result.get(name) or {}
        sets[name] = {"n": stats.get("n", 0), "flips": stats.get("flips", {}),
                      "metrics": {m: {k: v.get(k) for k in ("base", "tuned", "delta", "ci", "n", "better")}
                                  for m, v in (stats.get("metrics") or {}).items()}}
    return {"run_id": result["run_id"], "adapter_run": result.get("adapter_run"), "dataset": result.get("dataset"),
            "status": result["status"], "error": result.get("error"), "sets": sets, "judge": result.get("judge")}


def _print_eval(d: dict) -> None:
    from backend.evaluate import SET_MEANING

    print(f"evaluation {d['run_id']} of {d.get('adapter_run')}: {d['status']}" + (
        f" ({d['error']})" if d.get("error") else ""))
    for name, data in d["sets"].items():
        print(f"  {name} ({data['n']} prompts; {SET_MEANING.get(name, 'a held-out split')})")
        print(f"    {'metric':<18} {'base':>8} {'tuned':>8} {'delta':>8}  95% interval     n")
        for m, v in data["metrics"].items():
            if v["n"]:
                print(f"    {m:<18} {v['base']:>8.4f} {v['tuned']:>8.4f} {v['delta']:>+8.4f}  "
                      f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] {v['n']:>4}"
                      + ("  (lower is better)" if v.get("better") == "lower" else ""))
    judge = d.get("judge") or {}
    if judge.get("skipped"):
        print(f"  judge: skipped — {judge['skipped']}")
    for eval_set, w in (judge.get("sets") or {}).items():
        print(f"  judge ({judge['model']}) on {eval_set}: {w['win']} wins, {w['tie']} ties, {w['loss']} losses; "
              f"win rate {w['win_rate']:.3f} [{w['ci'][0]:.3f}, {w['ci'][1]:.3f}]")


def cmd_eval_show(args) -> int:
    client = _connect(args)
    run = client.store.run(args.eval_run)
    if run is None or run["kind"] != "eval":
        raise _UserError(f"no evaluation run '{args.eval_run}'; list them with `doctune runs`")
    result = {"run_id": run["run_id"], "status": run["status"], "error": run["error"], **(run["summary"] or {})}
    _emit(args, eval_document(result), _print_eval)
    return 0


def cmd_models(args) -> int:
    from backend.base_models import list_models
    from backend.config import resolve_home

    rows = list_models(resolve_home(args.home))

    def human(rs):
        print(f"{'name':<34} {'params':>8} {'size':>9} {'chat':>5}  source")
        for r in rs:
            params = f"{r['params'] / 1e6:.0f}M" if r["params"] else "-"
            size = f"{r['size_bytes'] / 2**20:.0f} MiB" if r["size_bytes"] else "-"
            print(f"{r['name']:<34} {params:>8} {size:>9} {'yes' if r['chat_template'] else 'no':>5}  {r['source']}")

    _emit(args, rows, human)
    return 0


def cmd_eval_matrix(args) -> int:
    client = _connect(args)
    try:
        matrix = client.comparison_matrix(args.runs, args.set)
    except ValueError as exc:
        raise _UserError(str(exc)) from None

    def human(d):
        metrics = [m for m in next(iter(d["table"].values())) if any(v[m] is not None for v in d["table"].values())]
        print(f"{d['eval_set']} set, {d['prompts']} prompts")
        print(f"{'model':<34}" + "".join(f"{m:>12}" for m in metrics))
        for name, row in d["table"].items():
            print(f"{name:<34}" + "".join(f"{row[m]:>12.4f}" if row[m] is not None else f"{'-':>12}"
                                          for m in metrics))

    _emit(args, matrix, human)
    return 0


def cmd_merge(args) -> int:
    client = _connect(args)
    try:
        result = client.merge(args.run, args.out, args.dtype, args.gguf)
    except (ValueError, RuntimeError) as exc:
        raise _UserError(str(exc)) from None
    _emit(args, result, lambda d: print("\n".join(f"{k}: {v}" for k, v in d.items())))
    return 0


def cmd_config(args) -> int:
    from backend.config import ConfigError

    try:
        cfg = _train_config(args, gpu=False).validate()
    except ConfigError as exc:
        raise _UserError(str(exc)) from None
    data = cfg.to_dict()
    effective = cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    data["effective_batch_size"] = effective

    def human(d):
        print(f"preset {d['preset']} (engine {d['engine']})")
        for section in ("model", "lora", "training"):
            print(f"  {section}:")
            for k, v in d[section].items():
                print(f"    {k}: {v}")
        print(f"  effective batch size: {d['effective_batch_size']}")

    _emit(args, data, human)
    return 0


def cmd_cluster(args) -> int:
    from backend.config import resolve_home
    from actors.runtime import live_cluster_address, start_local_cluster, stop_local_cluster

    home = resolve_home(args.home)
    if args.action == "start":
        state = {"address": start_local_cluster(home, args.num_cpus), "running": True}
    elif args.action == "stop":
        state = {"stopped": stop_local_cluster(home), "running": False}
    else:
        address = live_cluster_address(home)
        state = {"address": address, "running": address is not None}
    _emit(args, state, lambda d: print(json.dumps(d)))
    return 0


def cmd_demo(args) -> int:
    """The whole pipeline on the bundled sample repository, each stage with its progress, then the dashboard."""
    import time

    from backend.config import SAMPLE_REPO, IngestConfig, resolve_home
    from backend.synth_config import SynthConfig, api_key
    from actors.runtime import start_local_cluster

    started = time.monotonic()
    dashboard = not args.no_dashboard and not args.json
    if dashboard:
        _check_dashboard_host(args.host)
    home = resolve_home(args.home)
    args.home = str(home)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    if dashboard and not (args.ray_address or os.environ.get("RAY_ADDRESS")):
        say("starting this home's Ray cluster, which the dashboard will show (`doctune cluster stop` ends it)")
        start_local_cluster(home)
    client = _connect(args)
    say(f"DocTune demo (home {home})\n[1/4] ingest: the bundled sample repository {SAMPLE_REPO}")
    report = _run_ingest(client, SAMPLE_REPO, args.project, IngestConfig(), quiet=args.json)
    stats = client.stats(args.project)
    if not args.json:
        _print_ingest(report.as_dict())
        _print_stats(stats)
    # the API when a key is set, else the offline generator: the demo needs neither network nor key
    cfg = SynthConfig(generator="openai" if api_key() else "heuristic")
    cfg.base_url, cfg.model = args.base_url or cfg.base_url, args.model or cfg.model
    if cfg.generator == "heuristic":
        cfg.probe_share = 1.0  # probes cost nothing offline: ask about every chunk with a fact
    say(f"[2/4] synthesize with the {cfg.generator} generator ({cfg.model_name()}), then curate")
    on_progress, close = _progress_bar("synthesizing", args.json)
    try:
        synth = client.synth(args.project, cfg, on_progress=on_progress)
    finally:
        close()
    if not args.json:
        _print_synth(synth)
    import ray

    gpu = ray.cluster_resources().get("GPU", 0) >= 1
    train_cfg = demo_train_config(gpu)
    say(f"[3/4] train a LoRA adapter: preset {train_cfg.preset}" + ("" if gpu else (
        f" (SmolLM2-135M-Instruct) on the CPU, on the repository's fact questions of "
        f"{train_cfg.data.max_samples} samples at most, {train_cfg.training.num_train_epochs:g} epochs")))
    on_progress, close = _progress_bar("training", args.json)
    try:
        trained = client.train(args.project, train_cfg, on_progress=on_progress)
    finally:
        close()
    if not args.json:
        _print_train(trained)
    if trained["status"] != "completed":
        return 1
    limits = None if gpu else DEMO_EVAL_LIMITS
    say("[4/4] evaluate base against tuned: held-out files, knowledge probes, general coding"
        + (" (at most " + ", ".join(f"{n} {s}" for s, n in limits.items()) + " prompts)" if limits else ""))
    judge = cfg if cfg.generator == "openai" else None
    on_progress, close = _progress_bar("evaluating", args.json)
    try:
        evaluated = client.evaluate(trained["run_id"], limits=limits, max_new_tokens=DEMO_MAX_NEW_TOKENS,
                                    batch_size=16, judge_cfg=judge, on_progress=on_progress)
    finally:
        close()
    evaluated.setdefault("adapter_run", trained["run_id"])
    probes = client.eval_results(evaluated["run_id"], "probe") if evaluated["status"] == "completed" else []
    learned = _demo_learned(probes, evaluated)
    if args.json:
        print(json.dumps({"ingest": report.as_dict(), "stats": client.stats(args.project), "synth": synth,
                          "datasets": client.datasets(args.project), "train": trained,
                          "eval": eval_document(evaluated), "learned": learned,
                          "seconds": round(time.monotonic() - started, 1)}, indent=2, default=str))
        return 0 if evaluated["status"] == "completed" else 1
    _print_eval(eval_document(evaluated))
    _print_learned(learned, repository="tidemark")
    print(f"done in {time.monotonic() - started:.0f} s. Next:\n"
          f"  doctune export --project {args.project} --format alpaca --out ./{args.project}-dataset\n"
          f"  tensorboard --logdir {home / 'runs'}")
    if evaluated["status"] != "completed":
        return 1
    if not dashboard:
        print("  doctune dashboard   # everything above, on http://127.0.0.1:8501")
        return 0
    import ray as ray_module

    ray_module.shutdown()  # the store actor lives in the cluster: the dashboard finds it there
    env = dict(os.environ, DOCTUNE_HOME=str(home))
    if args.ray_address:
        env["RAY_ADDRESS"] = args.ray_address
    return _serve_dashboard(home, args.host, args.port, env)


DEMO_EVAL_LIMITS = {"probe": 48, "test": 16, "retention": 25}
"""Prompts of each evaluation set the CPU demo scores: the knowledge probes matter most to it."""
DEMO_MAX_NEW_TOKENS = 40


def demo_train_config(gpu: bool):
    """The demo's training: the seed preset on a GPU; on a CPU, `smol` on a slice of the data it can learn in
    a few minutes. The slice is the repository's fact questions (a default, an exception, an error code ...),
    whole chunks of them, trained for several epochs; the knowledge probes of those chunks then ask the same
    facts in other words. Measured on 2 cores: see the README's evaluation section."""
    from backend.train_config import load_preset

    if gpu:
        return load_preset("seed")
    cfg = load_preset("smol")
    cfg.data.tasks = ["facts"]
    cfg.data.max_samples = 50             # ~30 chunks of the sample repository, ~50 knowledge probes about them
    # the preset mixes 30% general samples in (21 of the 71 here), which kept general coding as it was
    cfg.training.num_train_epochs = 4     # 72 steps of 4: each fact seen four times
    cfg.data.max_val_samples = 32         # two evaluations of the val loss, ~15 s each rather than ~50
    cfg.training.eval_steps = cfg.training.save_steps = 36
    return cfg


def _demo_learned(probes: list[dict], evaluated: dict) -> dict:
    """The evaluation in plain words: the probe set's shares (backend.evaluate.knowledge_summary), the change in
    general-coding loss, and three answers the base got wrong and the tuned model right."""
    from backend.evaluate import knowledge_summary, wrong_then_right

    retention = ((evaluated.get("retention") or {}).get("metrics") or {}).get("loss") or {}
    return {"probes": knowledge_summary(probes),
            "retention_loss": {k: retention.get(k) for k in ("base", "tuned", "delta", "ci")} if retention else None,
            "examples": [{"question": r["prompt"][-1]["content"], "fact": r.get("fact"), "base": r["base_output"],
                          "tuned": r["tuned_output"]} for r in wrong_then_right(probes)]}


def _print_learned(learned: dict, repository: str) -> None:
    p = learned["probes"]
    if not p["questions"]:
        print("No knowledge probe was evaluated (the dataset has no probe split for the trained chunks).")
        return
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"
    print(f"\nWhat the model learned: asked {p['questions']} questions about {repository} it had been trained on, "
          f"in words it never saw,")
    print(f"  the tuned model stated the right fact in {pct(p['tuned']['fact_right'])} of answers "
          f"(the base model in {pct(p['base']['fact_right'])}),")
    print(f"  used the repository's real names in {pct(p['tuned']['real_names'])} "
          f"(base {pct(p['base']['real_names'])}) and invented a name that does not exist in "
          f"{pct(p['tuned']['invented_names'])} (base {pct(p['base']['invented_names'])}).")
    r = learned.get("retention_loss")
    if r and r.get("base"):
        print(f"  General coding (retention set): loss {r['base']:.3f} → {r['tuned']:.3f} "
              f"({100 * r['delta'] / r['base']:+.1f}%; lower is better).")
    if learned["examples"]:
        print("Where the base model was wrong and the tuned model right (chosen by score):")
    for e in learned["examples"]:
        print(f"  Q: {e['question']}" + (f"   [fact: {e['fact']}]" if e.get("fact") else ""))
        for side in ("base", "tuned"):
            text = " ".join(e[side].split())
            print(f"     {side:<5}: {text[:160] + ('…' if len(text) > 160 else '')}")


def cmd_dashboard(args) -> int:
    """Start (or join) this home's Ray cluster, check the store opens, then hand over to Streamlit."""
    import ray

    from backend.config import resolve_home
    from actors.runtime import start_local_cluster

    _check_dashboard_host(args.host)
    home = resolve_home(args.home)
    env = dict(os.environ, DOCTUNE_HOME=str(home))
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        env["RAY_ADDRESS"] = address
    else:  # a cluster of this home's own, so runs outlive the dashboard (`doctune cluster stop` ends it)
        print("starting this home's Ray cluster (runs outlive the dashboard) ...", flush=True)
        start_local_cluster(home, args.num_cpus)
    args.home = str(home)
    _connect(args)  # fails here, with its reason, when another process holds the database
    ray.shutdown()
    return _serve_dashboard(home, args.host, args.port, env)


def _check_dashboard_host(host: str) -> None:
    from backend.auth import AUTH_VARIABLE, PASSWORD_VARIABLE, exposed_without_gate

    if exposed_without_gate(host):
        raise _UserError(f"--host {host} exposes the dashboard beyond this machine: set {PASSWORD_VARIABLE} "
                         f"(an access password) or {AUTH_VARIABLE}=oidc (Streamlit's OIDC login, configured in "
                         ".streamlit/secrets.toml), or keep the default --host 127.0.0.1")


def _serve_dashboard(home, host: str, port: int, env: dict) -> int:
    """Replace this process with the Streamlit server (the runs live in the cluster, not here)."""
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    url = f"http://{host}:{port}"
    print(f"DocTune dashboard: {url}  (home {home}; Ctrl-C stops the dashboard, not the runs)", flush=True)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--global.developmentMode", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal"]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


COMMANDS = {"ingest": cmd_ingest, "stats": cmd_stats, "projects": cmd_projects, "runs": cmd_runs,
            "synth": cmd_synth, "curate": cmd_curate, "datasets": cmd_datasets, "export": cmd_export,
            "dead-letters": cmd_dead_letters, "train": cmd_train, "cancel": cmd_cancel, "eval": cmd_eval,
            "eval-show": cmd_eval_show, "models": cmd_models, "eval-matrix": cmd_eval_matrix,
            "merge": cmd_merge, "config": cmd_config,
            "cluster": cmd_cluster, "dashboard": cmd_dashboard, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
