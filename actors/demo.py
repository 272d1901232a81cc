"""The demo: the whole pipeline on the bundled sample repository (ingest, synthesize and curate, train, evaluate),
each stage with its progress and summary, sized to finish in minutes on a CPU. `doctune demo` runs it, then
serves the dashboard on what it made."""

from __future__ import annotations

from backend.config import SAMPLE_REPO
from backend.endpoint_config import api_key
from backend.eval_config import EvalConfig
from backend.ingest_config import IngestConfig
from backend.synth_config import SynthConfig
from backend.train_config import TrainConfig, load_preset
from actors.printers import (chunking_bar, eval_document, print_eval, print_ingest, print_stats, print_synth,
                             print_train, progress_bar)

DEMO_EVAL_LIMITS = {"probe": 48, "test": 16, "retention": 25}
"""Prompts of each evaluation set the CPU demo scores: the knowledge probes matter most to it."""
DEMO_MAX_NEW_TOKENS = 40
SAMPLE_PACKAGE = "tidemark"  # what the sample repository documents, as the summary names it


def run_demo(client, project: str, *, base_url: str | None = None, model: str | None = None,
             quiet: bool = False) -> dict:
    """Run the four stages into `client`'s home, telling each as it goes unless `quiet`.

    Args:
        base_url: with an API key set, the endpoint to synthesize with (default DeepSeek).
        model: with an API key set, the generator model (default deepseek-chat).

    Returns:
        Each stage's result: ingest, stats, synth, datasets, train, eval (as `eval_document`) and learned
        (as `learned_summary`); eval and learned are None when training did not complete.
    """
    _say(quiet, f"DocTune demo (home {client.home})")
    ingested = ingest_sample(client, project, quiet)
    synth_cfg = demo_synth_config(base_url, model)
    synth = synthesize_samples(client, project, synth_cfg, quiet)
    gpu = client.cluster_has_gpu()
    trained = train_adapter(client, project, demo_train_config(gpu), gpu, quiet)
    evaluated = learned = None
    if trained["status"] == "completed":
        judge = synth_cfg if synth_cfg.generator == "openai" else None
        evaluated, learned = evaluate_adapter(client, trained["run_id"], gpu, judge, quiet)
    return {"ingest": ingested, "stats": client.stats(project), "synth": synth, "datasets": client.datasets(project),
            "train": trained, "eval": evaluated, "learned": learned}


def ingest_sample(client, project: str, quiet: bool) -> dict:
    """[1/4] The sample repository into `project`; returns the ingest report."""
    _say(quiet, f"[1/4] ingest: the bundled sample repository {SAMPLE_REPO}")
    with chunking_bar(quiet) as (on_plan, on_progress):
        report = client.ingest(SAMPLE_REPO, project, IngestConfig(), on_progress=on_progress, on_plan=on_plan)
    if not quiet:
        print_ingest(report.as_dict())
        print_stats(client.stats(project))
    return report.as_dict()


def demo_synth_config(base_url: str | None, model: str | None) -> SynthConfig:
    """The API when a key is set, else the offline generator: the demo needs neither network nor key."""
    cfg = SynthConfig(generator="openai" if api_key() else "heuristic")
    cfg.endpoint.base_url = base_url or cfg.endpoint.base_url
    cfg.endpoint.model = model or cfg.endpoint.model
    if cfg.generator == "heuristic":
        cfg.probe_share = 1.0  # probes cost nothing offline: ask about every chunk with a fact
    return cfg


def synthesize_samples(client, project: str, cfg: SynthConfig, quiet: bool) -> dict:
    """[2/4] Samples from every chunk, curated into a dataset version; returns the synthesis summary."""
    _say(quiet, f"[2/4] synthesize with the {cfg.generator} generator ({cfg.model_name()}), then curate")
    with progress_bar("synthesizing", quiet) as on_progress:
        synth = client.synth(project, cfg, on_progress=on_progress)
    if not quiet:
        print_synth(synth)
    return synth


def demo_train_config(gpu: bool) -> TrainConfig:
    """The demo's training: the seed preset on a GPU; on a CPU, `smol` on a slice of the data it can learn in
    a few minutes. The slice is the repository's fact questions (a default, an exception, an error code ...),
    whole chunks of them, trained for several epochs; the knowledge probes of those chunks then ask the same
    facts in other words. Measured on 2 cores: see the README's evaluation section."""
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


def train_adapter(client, project: str, cfg: TrainConfig, gpu: bool, quiet: bool) -> dict:
    """[3/4] A LoRA adapter on the dataset just curated; returns the training result."""
    _say(quiet, f"[3/4] train a LoRA adapter: preset {cfg.preset}" + ("" if gpu else (
        f" (SmolLM2-135M-Instruct) on the CPU, on the repository's fact questions of "
        f"{cfg.data.max_samples} samples at most, {cfg.training.num_train_epochs:g} epochs")))
    with progress_bar("training", quiet) as on_progress:
        trained = client.train(project, cfg, on_progress=on_progress)
    if not quiet:
        print_train(trained)
    return trained


def evaluate_adapter(client, adapter_run: str, gpu: bool, judge: SynthConfig | None,
                     quiet: bool) -> tuple[dict, dict]:
    """[4/4] Base against tuned on the held-out files, the knowledge probes and general coding; returns the
    evaluation (as `eval_document`) and what the model learned (as `learned_summary`)."""
    limits = None if gpu else DEMO_EVAL_LIMITS
    _say(quiet, "[4/4] evaluate base against tuned: held-out files, knowledge probes, general coding"
         + (" (at most " + ", ".join(f"{n} {s}" for s, n in limits.items()) + " prompts)" if limits else ""))
    cfg = EvalConfig(limits=limits or {}, max_new_tokens=DEMO_MAX_NEW_TOKENS, batch_size=16, judge=judge is not None)
    if judge is not None:
        cfg.endpoint = judge.endpoint
    with progress_bar("evaluating", quiet) as on_progress:
        evaluated = client.evaluate(adapter_run, cfg, on_progress=on_progress)
    evaluated.setdefault("adapter_run", adapter_run)
    probes = client.eval_results(evaluated["run_id"], "probe") if evaluated["status"] == "completed" else []
    learned = learned_summary(probes, evaluated)
    if not quiet:
        print_eval(eval_document(evaluated))
        print_learned(learned, repository=SAMPLE_PACKAGE)
    return eval_document(evaluated), learned


def learned_summary(probes: list[dict], evaluated: dict) -> dict:
    """The evaluation in plain words: the probe set's shares (backend.evaluate.knowledge_summary), the change in
    general-coding loss, and three answers the base got wrong and the tuned model right."""
    # backend.evaluate imports numpy: loaded once there is an evaluation, so `doctune --help` stays fast
    from backend.evaluate import knowledge_summary, wrong_then_right

    retention = ((evaluated.get("retention") or {}).get("metrics") or {}).get("loss") or {}
    return {"probes": knowledge_summary(probes),
            "retention_loss": {k: retention.get(k) for k in ("base", "tuned", "delta", "ci")} if retention else None,
            "examples": [{"question": r["prompt"][-1]["content"], "fact": r.get("fact"), "base": r["base_output"],
                          "tuned": r["tuned_output"]} for r in wrong_then_right(probes)]}


def print_learned(learned: dict, repository: str) -> None:
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


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)
