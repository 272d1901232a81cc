"""What the CLI and the demo print for people: each command's result as a summary or table on stdout, and the
progress bars of long stages on stderr. Every printer takes the same dict that `--json` prints."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Callable, Iterator


# ---- progress bars (tqdm is imported when a bar is drawn: `doctune --help` does not pay for it) ------------
@contextmanager
def chunking_bar(quiet: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int, int], None]]]:
    """(on_plan, on_progress) for ingestion's callbacks: a bar of files on stderr, sized once the plan is known."""
    bar = None

    def on_plan(n: int) -> None:
        nonlocal bar
        from tqdm import tqdm

        bar = tqdm(total=n, unit="file", desc="chunking", disable=quiet or None, file=sys.stderr)

    def on_progress(files: int, _bytes: int) -> None:
        bar.update(files)

    try:
        yield on_plan, on_progress
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def progress_bar(stage: str, quiet: bool) -> Iterator[Callable[[dict], None]]:
    """on_progress for a run's progress callbacks: a tqdm bar on stderr (nothing when quiet).

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
            # failed attempts (5xx, timeouts, unparseable answers; most retried) apart from dead letters (units
            # that kept failing): a run retrying its way through 500s has no dead letter
            bar.set_postfix(done=p["done"], errors=p["errors"], dead=p["failed"], rpm=p["rpm"], r429=p["http_429"],
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

    try:
        yield on_progress
    finally:
        if bar is not None:
            bar.close()


# ---- corpus --------------------------------------------------------------------------------------------
def print_ingest(r: dict) -> None:
    skipped = sum(r["skipped"].values())
    print(f"ingested {r['root']} into project '{r['project']}' ({r['seconds']:.1f}s, run {r['run_id']})")
    print(f"  files: {r['new']} new, {r['changed']} changed, {r['unchanged']} unchanged, "
          f"{skipped} skipped, {r['gone']} gone, {r['ignored']} ignored")
    for reason, n in r["skipped"].items():
        print(f"    skipped {reason}: {n}")
    print(f"  chunks written: {r['chunks_written']} from {r['bytes_chunked'] / 1e6:.2f} MB")


def print_stats(s: dict) -> None:
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


def print_projects(rows: list[dict]) -> None:
    print("\n".join(f"{r['name']:<20} {r['files']:>6} files {r['chunks']:>7} chunks  {r['root']}" for r in rows)
          or "no projects")


# ---- synthesis and datasets ----------------------------------------------------------------------------
def print_synth(s: dict) -> None:
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
          f"{s['done_before']} done before; samples: {s['samples']}"
          + (f"; {s['not_needed']} units not needed (target reached)" if s.get("not_needed") else ""))
    print(f"  requests: {s['requests']} ({s['http_429']} answered 429, {s.get('errors', 0)} failed and retried or "
          f"given up); tokens {s['tokens_in']} in, "
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


def print_refresh(s: dict) -> None:
    e = s["estimate"]
    cost = f"${e['cost_usd']:.4f}" if e["cost_usd"] is not None else "unknown (no price for this model)"
    what = "would change" if s.get("dry_run") else "changed"
    print(f"project '{s['project']}' since dataset version {s['version']}: files {what}: "
          f"{len(s['added'])} added, {len(s['changed'])} changed, {len(s['deleted'])} deleted"
          + (f" ({len(s['renamed'])} of them renamed)" if s["renamed"] else ""))
    for label in ("added", "changed", "deleted"):
        for path in s[label]:
            print(f"  {label:<8} {path}")
    if s["nothing_changed"]:
        print("nothing changed: no request sent, no new version")
        return
    print(f"  samples: {s['keep']} kept, {s['carried']} carried to renamed files, {s['retire']} retired")
    print(f"  requests: {e['requests']} of {s['units']} planned to {e['model']} (the others' answers are cached), "
          f"~{e['tokens_in']} tokens in, ~{e['tokens_out']} out, estimated cost {cost}")
    if s.get("dry_run"):
        return
    print(f"  sent {s['requests_sent']} requests" + (f" in run {s['synth_run']}" if s["synth_run"] else ""))
    print(f"  new dataset version {s['dataset']} (refresh of {s['version']})" if s["dataset"] else
          f"  no new version: synthesis ended {s['synth_status']}; rerun `doctune refresh` to finish")


def print_curated(d: dict) -> None:
    print(f"dataset {d['version']}: {d['samples']} samples "
          f"({', '.join(f'{k} {v}' for k, v in sorted(d['splits'].items()))}); dropped {d['stats'].get('dropped', 0)}")


def print_datasets(rows: list[dict]) -> None:
    print("\n".join(
        f"{'*' if r['current'] else ' '} {r['version']:<5} {r['samples']:>6} samples  "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["splits"].items()))
        + f"  {r['operation'] or 'curation'}" + (f" of {r['parent']}" if r["parent"] else "")
        + (f" ({r['note']})" if r["note"] else "") + f"  from {', '.join(r['source_runs'] or [])}" for r in rows)
        + ("\n* the current version: training and export use it by default" if rows else "")
        or "no dataset versions yet")


def print_review(d: dict) -> None:
    print(f"saved as {d['version']} ({d['edited']} edited, {d['rejected']} rejected); {d['parent']} is unchanged "
          f"and {d['version']} is now the current version")


def print_export(d: dict, project: str) -> None:
    print(f"exported {project} {d['version']} as {d['format']}:\n" + "\n".join(f"  {p}" for p in d["files"]))


def print_dead_letters(rows: list[dict]) -> None:
    print("\n".join(f"{r['run_id']}  {r['task']:<10} {r['reason']:<12} chunk {r['chunk_id']}  "
                    f"{(r['detail'] or '')[:80]}" for r in rows) or "no dead letters")


# ---- runs and training ---------------------------------------------------------------------------------
def print_runs(rows: list[dict]) -> None:
    # a serving run that is up shows where it answers
    print("\n".join(f"{r['id']:<36} {r['kind']:<8} {r['status']:<10} {r['project'] or '':<12} "
                    f"{r['created_at']:%Y-%m-%d %H:%M}"
                    + (f"  {r['summary']['url']}" if r["kind"] == "serve" and r["status"] == "running"
                       and r["summary"].get("url") else "") for r in rows) or "no runs")


def print_served(r: dict) -> None:
    print(f"serving run {r['run_id']}: {r['url']}  models: {', '.join(r['models'])}")
    print(f"  try: curl {r['url']}/models")
    print("  stop: doctune serve --stop" + ("" if r.get("detached") else "  (or Ctrl-C here)"))


def print_verified(r: dict) -> None:
    if r["passed"]:
        print(f"identical: {r['checked']} answers of {r['url']} match evaluation {r['eval_run']}")
        return
    d = r["differences"][0]
    print(f"DIFFERENT: {r['identical']} of {r['checked']} answers match evaluation {r['eval_run']}; the first "
          f"difference is at character {d['offset']} of the answer to {d['eval_set']} sample {d['sample_id']}:")
    print(f"  prompt:    {d['prompt'][:200]!r}\n  evaluated: {d['expected']!r}\n  served:    {d['got']!r}")


def print_train(r: dict) -> None:
    if r.get("detached"):
        print(f"run {r['run_id']} queued on dataset {r['dataset']}; watch it with `doctune runs`, "
              f"stop it with `doctune cancel {r['run_id']}`")
        return
    print(f"run {r['run_id']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else ""))
    if r.get("parent_run"):
        print(f"  continues run {r['parent_run']}'s adapter on dataset {r['dataset']}")
    if r.get("global_step") is not None:
        print(f"  steps {r['global_step']}, epochs {r['epochs']}, train loss {r['train_loss']}, "
              f"eval loss {r['eval_loss']}, {r.get('tokens_per_second') or 0:.0f} tokens/s")
    if r.get("adapter"):
        print(f"  adapter: {r['adapter']}")
    elif r.get("checkpoint"):
        print(f"  checkpoint: {r['checkpoint']} — continue with `doctune train --resume {r['run_id']}`")


def print_cancelled(d: dict) -> None:
    print(f"{d['run_id']}: {d['state']}")


def print_merged(d: dict) -> None:
    print("\n".join(f"{k}: {v}" for k, v in d.items()))


def print_exported(d: dict) -> None:
    print(f"bundle: {d['bundle']} (run {d['run_id']}, export run {d['export_run']})")
    print(f"  merged/  adapter/  README.md  Modelfile (Ollama: {d['ollama']})  manifest.json")
    for f in d["gguf"]:
        print(f"  gguf: {f}")
    verify = d["verify"]
    if "skipped" in verify:
        print(f"verify: skipped: {verify['skipped']}")
    elif verify["passed"]:
        print(f"verify: identical: all {verify['checked']} answers of evaluation {verify['eval_run']} (greedy, "
              f"merged model)")
    else:
        first = verify["differences"][0]
        print(f"verify: DIFFERENT: {verify['checked'] - verify['identical']} of {verify['checked']} answers of "
              f"evaluation {verify['eval_run']} differ; first: {first['eval_set']} sample {first['sample_id']}, "
              f"prompt {first['prompt'][:80]!r}, at character {first['offset']}:")
        print(f"  evaluated: {first['expected']!r}")
        print(f"  bundle:    {first['got']!r}")
        print("  (a changed chat template, system prompt or stop token in merged/ makes the bundle answer otherwise; "
              "so can rounding: an evaluation on a CPU ran in fp32, which `--dtype fp32` ships exactly)")


def print_train_config(d: dict) -> None:
    print(f"preset {d['preset']} (engine {d['engine']})")
    for section in ("model", "lora", "training"):
        print(f"  {section}:")
        for k, v in d[section].items():
            print(f"    {k}: {v}")
    print(f"  effective batch size: {d['effective_batch_size']}")


# ---- evaluation ----------------------------------------------------------------------------------------
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
            "status": result["status"], "error": result.get("error"), "sets": sets, "judge": result.get("judge"),
            "against": result.get("against")}


def print_eval(d: dict) -> None:
    # backend.evaluate imports numpy: loaded when an evaluation is printed, not for `doctune --help`
    from backend.eval_config import SET_MEANING

    print(f"evaluation {d['run_id']} of {d.get('adapter_run')}: {d['status']}" + (
        f" ({d['error']})" if d.get("error") else ""))
    for name, data in d["sets"].items():
        print(f"  {name} ({data['n']} prompts; {SET_MEANING.get(name, 'a held-out split')})")
        _print_metric_table(data["metrics"], "base", "tuned")
    judge = d.get("judge") or {}
    if judge.get("skipped"):
        print(f"  judge: skipped — {judge['skipped']}")
    for eval_set, w in (judge.get("sets") or {}).items():
        print(f"  judge ({judge['model']}) on {eval_set}: {w['win']} wins, {w['tie']} ties, {w['loss']} losses; "
              f"win rate {w['win_rate']:.3f} [{w['ci'][0]:.3f}, {w['ci'][1]:.3f}]")
    if d.get("against"):
        _print_against(d["against"])


def _print_metric_table(metrics: dict, a: str, b: str) -> None:
    """Each metric with a figure: side `a`, side `b` (each column at least 8 wide), delta, 95% interval, n."""
    wa, wb = max(8, len(a)), max(8, len(b))
    print(f"    {'metric':<18} {a:>{wa}} {b:>{wb}} {'delta':>8}  95% interval     n")
    for m, v in metrics.items():
        if v["n"]:
            print(f"    {m:<18} {v[a]:>{wa}.4f} {v[b]:>{wb}.4f} {v['delta']:>+8.4f}  "
                  f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] {v['n']:>4}"
                  + ("  (lower is better)" if v.get("better") == "lower" else ""))


def _print_against(a: dict) -> None:
    """The continued adapter against the previous one, per group of files (changed, unchanged)."""
    files = a["files"]
    print(f"  against the previous adapter {a['previous_run']} (dataset {a['previous_dataset']} -> {a['dataset']}: "
          f"{files['added']} files added, {files['changed']} changed, {files['deleted']} deleted, "
          f"{files['unchanged']} unchanged)")
    for group, meaning in (("changed", "did it learn the change?"), ("unchanged", "did it keep the rest?")):
        g = a["groups"][group]
        sets = ", ".join(f"{n} {s}" for s, n in g["sets"].items()) or "none"
        print(f"  {group} files ({g['n']} prompts: {sets}; {meaning})")
        _print_metric_table(g["metrics"], "previous", "continued")


def print_eval_matrix(d: dict) -> None:
    metrics = [m for m in next(iter(d["table"].values())) if any(v[m] is not None for v in d["table"].values())]
    print(f"{d['eval_set']} set, {d['prompts']} prompts")
    print(f"{'model':<34}" + "".join(f"{m:>12}" for m in metrics))
    for name, row in d["table"].items():
        print(f"{name:<34}" + "".join(f"{row[m]:>12.4f}" if row[m] is not None else f"{'-':>12}" for m in metrics))


def print_models(rows: list[dict]) -> None:
    print(f"{'name':<34} {'params':>8} {'size':>9} {'chat':>5}  source")
    for r in rows:
        params = f"{r['params'] / 1e6:.0f}M" if r["params"] else "-"
        size = f"{r['size_bytes'] / 2**20:.0f} MiB" if r["size_bytes"] else "-"
        print(f"{r['name']:<34} {params:>8} {size:>9} {'yes' if r['chat_template'] else 'no':>5}  {r['source']}")


# ---- operations ----------------------------------------------------------------------------------------
def print_cluster(d: dict) -> None:
    print(json.dumps(d))
