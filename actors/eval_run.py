"""The evaluation run: base against tuned on the held-out split and on the retention set, in one actor.

One model is loaded with its adapter; every prompt is generated twice, with the adapter off and on
(batched, greedy), and scored against its reference. The held-out loss of both is measured on the same
completion tokens the training loss used. Scores, outputs and statistics go to the store; the optional
pairwise judge runs afterwards in the same actor, through the LLM pool (`actors/llm_pool.py`), each pair
judged in both orders so position bias cancels. The run follows the lifecycle of `actors/runs.py`.

An adapter that continued another (`doctune train --from`) is also compared with that previous adapter, loaded
beside it in the same model: on the prompts of files that changed between their dataset versions (did it learn the
change?) and of files that did not (did it keep the rest?).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import ray

from backend.endpoint_config import Secret, api_key
from backend.eval_config import EvalConfig
from backend.evaluate import combine_pairwise, win_rate
from backend.run_status import RunStatus, new_run_id
from backend.synth_config import SynthConfig
from backend.synthesize import load_template, parse_pairwise, render_pairwise_messages
from actors import runs
from actors.llm_pool import generator_pool
from actors.store_actor import StoreClient

METRICS = ["rouge_l", "bleu", "chrf", "exact_match", "syntax_valid", "pass_rate", "api_recall", "api_hallucination",
           "fact_accuracy", "loss", "perplexity"]
PROBE_SET, RETENTION_SET = "probe", "retention"


@ray.remote
class EvalRun:
    """Generates and scores base vs tuned for one adapter on three sets; stores every output.

    - the held-out split (`test`): files the model never saw — do its skills carry over?
    - `probe`: knowledge probes about the chunks it was trained on, asked in words it never saw — does it know
      the repository?
    - `retention`: general coding prompts — did it keep what it knew?
    """

    def __init__(self, home: str, run_id: str, adapter_run: str, project: str, version: str, cfg: EvalConfig,
                 key: Secret, against: str | None = None):
        self.home, self.run_id, self.adapter_run, self.against = Path(home), run_id, adapter_run, against
        self.project, self.version, self.cfg, self.key = project, version, cfg, key
        # the judge's requests are shaped like synthesis requests (temperature, max tokens) to its endpoint
        self.judge_cfg = SynthConfig(generator="openai", endpoint=cfg.endpoint) if cfg.judge else None
        self.store = StoreClient(self.home)
        self.stop = threading.Event()
        self.progress_state = {"status": RunStatus.QUEUED, "done": 0, "total": 0}

    def run(self) -> dict:
        import os

        from backend.evaluate import load_retention_set
        from backend.generate import load_for_eval
        from backend.repo_index import RepoIndex
        from backend.base_models import resolve_model_path
        from backend.train import use_all_cores

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.progress_state["status"] = RunStatus.RUNNING
        self.store.update_run(self.run_id, status=RunStatus.RUNNING)
        train = self.store.run(self.adapter_run)
        adapter = Path(train["summary"]["adapter"])
        cfg = self.cfg
        sets = eval_sets(self.store.dataset_rows(self.project, self.version), train["config"]["train"], cfg.split,
                         cfg.limit, cfg.limits)
        retention = load_retention_set()[: cfg.limits.get(RETENTION_SET, cfg.limit)]
        for r in retention:
            r.setdefault("sample_id", r["id"])
        sets[RETENTION_SET] = retention
        index = RepoIndex(self.store.identifiers(self.project))
        status, error, summary = RunStatus.FAILED, None, {}
        try:
            use_all_cores()
            base_path = resolve_model_path(train["config"]["train"]["model"]["name_or_path"], home=self.home)
            model, tokenizer = load_for_eval(adapter, base_model_path=base_path)
            self.progress_state["total"] = 2 * sum(len(rows) for rows in sets.values())
            summary = {"adapter_run": self.adapter_run, "dataset": self.version, "split": cfg.split,
                       "sets": list(sets), "identifiers": len(index.names)}
            evaluated = {}
            for eval_set, set_rows in sets.items():
                if self.stop.is_set():
                    break
                evaluated[eval_set] = self._evaluate(model, tokenizer, eval_set, set_rows, index)
                self.store.record_eval_results(evaluated[eval_set])
                summary[eval_set] = _statistics(evaluated[eval_set])
            if self.against and not self.stop.is_set():
                summary["against"] = self._against_previous(model, tokenizer, sets, evaluated, index)
            del model  # the judge needs no model: free the memory before it runs
            if self.stop.is_set():
                status = RunStatus.CANCELLED
            else:
                summary["judge"] = judge_pairs(self.store, self.run_id, self.project, self.judge_cfg, self.key)
                status = RunStatus.COMPLETED
        except Exception as exc:  # stored on the run
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.progress_state["status"] = status
            self.store.finish_run(self.run_id, status, summary, error)
            runs.end_current_actor()  # its GPU goes to the next queued run
        return {"run_id": self.run_id, "status": status, "error": error, **summary}

    def _evaluate(self, model, tokenizer, eval_set: str, rows: list[dict], index) -> list[dict]:
        from backend.chat import prompt_messages

        if not rows:
            return []
        prompts = [prompt_messages(r) for r in rows]
        base, tuned = (self._answer(model, tokenizer, rows, prompts, adapter, index) for adapter in (False, True))
        return [{"run_id": self.run_id, "adapter_run": self.adapter_run, "eval_set": eval_set,
                 "sample_id": row["sample_id"], "task": row.get("task"), "prompt": prompts[i],
                 "reference": base[i]["reference"], "base_output": base[i]["text"], "tuned_output": tuned[i]["text"],
                 "base_scores": base[i]["scores"], "tuned_scores": tuned[i]["scores"], "judge": None,
                 "judge_detail": None, "fact": row.get("fact"),
                 "details": {"base": base[i]["details"], "tuned": tuned[i]["details"]}}
                for i, row in enumerate(rows)]

    def _answer(self, model, tokenizer, rows: list[dict], prompts: list, adapter: bool, index) -> list[dict]:
        """One side's answers to `rows`, each {reference, text, scores, details}: the model with its active adapter
        (`adapter`), or the base with it switched off."""
        from backend.chat import to_prompt_completion
        from backend.evaluate import score_output
        from backend.generate import completion_losses, generate

        outputs = generate(model, tokenizer, prompts, adapter=adapter, batch_size=self.cfg.batch_size,
                           max_new_tokens=self.cfg.max_new_tokens)
        self.progress_state["done"] += len(rows)
        losses = completion_losses(model, tokenizer, rows, adapter=adapter, batch_size=self.cfg.batch_size)
        passes = self._pass_rates(rows, [o["text"] for o in outputs])
        answers = []
        for i, row in enumerate(rows):
            # the answer the model was trained to give: the output, or a conversation's last assistant turn
            reference = to_prompt_completion(row)["completion"][-1]["content"]
            text, loss = outputs[i]["text"], losses[i]
            question = "\n".join(m["content"] for m in prompts[i])
            scores = score_output(text, reference, index=index, fact=row.get("fact"), prompt=question)
            # NaN: the prompt alone filled max_length, so no answer token was scored
            scores["loss"] = None if math.isnan(loss) else loss
            scores["perplexity"] = None if math.isnan(loss) else math.exp(min(50.0, loss))
            scores["pass_rate"] = passes.get(i)
            answers.append({"reference": reference, "text": text, "scores": scores,
                            "details": {"mentioned": sorted(index.mentions(text)),
                                        "unknown": sorted(index.unknown(index.claims(text)))}})
        return answers

    def _pass_rates(self, rows: list[dict], texts: list[str]) -> dict[int, float]:
        """For samples whose reference code passed the execution check at curation, run the model's code the same
        way (sandboxed, against the repository): 1.0 pass, 0.0 anything else."""
        from backend.evaluate import code_passes

        root = next((p["root"] for p in self.store.projects() if p["name"] == self.project), None)
        if root is None or not Path(root).is_dir():
            return {}
        return {i: code_passes(texts[i], root) for i, row in enumerate(rows) if row.get("exec_status") == "pass"}

    def _against_previous(self, model, tokenizer, sets: dict, evaluated: dict, index) -> dict:
        """The previous adapter on the held-out and probe prompts the continued one answered, grouped by whether
        their file changed between the two adapters' dataset versions: did it learn the change, keep the rest?"""
        from backend.chat import prompt_messages
        from backend.evaluate import changed_files, change_group, compare_by_change

        previous = self.store.run(self.against)
        old_version = previous["config"]["dataset"]
        files = changed_files(self.store.dataset_rows(self.project, old_version),
                              self.store.dataset_rows(self.project, self.version))
        model.load_adapter(previous["summary"]["adapter"], adapter_name="previous")
        model.set_adapter("previous")  # generate(adapter=True) answers with the active adapter
        rows = []
        try:
            for eval_set in (self.cfg.split, PROBE_SET):
                set_rows = [r for r in sets[eval_set] if change_group(r.get("path"), files)]
                self.progress_state["total"] += len(set_rows)
                if not set_rows:
                    continue
                answers = self._answer(model, tokenizer, set_rows, [prompt_messages(r) for r in set_rows], True, index)
                continued = {r["sample_id"]: r["tuned_scores"] for r in evaluated[eval_set]}
                rows += [{"path": r.get("path"), "eval_set": eval_set, "previous": a["scores"],
                          "continued": continued[r["sample_id"]]} for r, a in zip(set_rows, answers)]
        finally:
            model.set_adapter("default")
            model.delete_adapter("previous")
        metrics = [m for m in METRICS if any(r["previous"].get(m) is not None for r in rows)]
        return {"previous_run": self.against, "previous_dataset": old_version, "dataset": self.version,
                "files": {k: len(v) for k, v in files.items()},
                "changed_files": files["added"] + files["changed"], "deleted_files": files["deleted"],
                "groups": compare_by_change(rows, files, metrics)}

    def progress(self) -> dict:
        return dict(self.progress_state)

    def cancel(self) -> None:
        """Stop after the set being evaluated (its results are kept)."""
        self.stop.set()


def eval_sets(rows: list[dict], train_config: dict, split: str, limit: int | None,
              limits: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """The dataset's prompts to evaluate a run on: the held-out `split`, and the knowledge probes of the chunks
    the run trained on (its `data` settings chose them), each sorted by sample id and cut to `limits[set]`, else
    `limit`."""
    from backend.train import select_training_rows
    from backend.train_config import TrainConfig

    cfg = TrainConfig.from_dict(train_config, "the run's config")
    trained = select_training_rows([r for r in rows if r["split"] == "train"], cfg.data, cfg.training.seed)
    chunks = {r.get("chunk_id") for r in trained}
    held_out = sorted((r for r in rows if r["split"] == split), key=lambda r: r["sample_id"])
    probes = sorted((r for r in rows if r["split"] == PROBE_SET and r.get("chunk_id") in chunks),
                    key=lambda r: r["sample_id"])
    limits = limits or {}
    return {split: held_out[:limits.get(split, limit)], PROBE_SET: probes[:limits.get(PROBE_SET, limit)]}


def _statistics(results: list[dict]) -> dict:
    """Per metric base, tuned, delta and its paired-bootstrap 95% interval; per-sample flips."""
    from backend.evaluate import LOWER_IS_BETTER, aggregate, flips

    rows = [{"sample_id": r["sample_id"], "base": r["base_scores"], "tuned": r["tuned_scores"]} for r in results]
    metrics = [m for m in METRICS if any((r["base"] or {}).get(m) is not None for r in rows)]
    stats = {"n": len(rows), "metrics": aggregate(rows, metrics)}
    stats["flips"] = {m: {k: len(v) for k, v in flips(rows, m, lower_is_better=m in LOWER_IS_BETTER).items()}
                      for m in ("rouge_l", "loss", "fact_accuracy", "api_recall") if m in metrics}
    return stats


def start_eval_run(client, adapter_run: str, cfg: EvalConfig, on_progress=None, wait: bool = True,
                   against: str | None = None) -> dict:
    """Evaluate a completed training run's adapter against its base; optionally judge the pairs. Without `wait`,
    returns once the run's actor is started. `against`: a previous adapter's training run to compare with, per
    changed and unchanged file (default: the run's parent, when it continued one)."""
    cfg.validate()
    store = client.store
    train = _completed_train_run(store, adapter_run)
    project, version = train["project"], train["config"]["dataset"]
    if not any(r["split"] == cfg.split for r in store.dataset_rows(project, version)):
        raise ValueError(f"dataset {version} of project '{project}' has no '{cfg.split}' samples")
    against = against or train["config"].get("parent_run")
    if against:
        previous = _completed_train_run(store, against)
        if previous["project"] != project or (previous["config"]["train"]["model"]["name_or_path"]
                                              != train["config"]["train"]["model"]["name_or_path"]):
            raise ValueError(f"run {against} is not an adapter of run {adapter_run}'s project and base model "
                             f"({project}, {train['config']['train']['model']['name_or_path']}); compare with an "
                             f"earlier run of the same project and base (`doctune runs --project {project}`)")
    run_id = new_run_id("eval")
    store.create_run(run_id, "eval", project, {"adapter_run": adapter_run, "dataset": version, "split": cfg.split,
                                               "limit": cfg.limit, "limits": cfg.limits, "against": against,
                                               "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
                                               "greedy": True})
    store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(EvalRun, run_id, str(client.home), run_id, adapter_run, project, version, cfg,
                         Secret(api_key()), against, resources=runs.model_resources())
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "detached": True}
    return runs.watch(handle, on_progress)


def latest_completed_eval(store: StoreClient, train_run: str) -> dict | None:
    """The newest completed evaluation of a training run's adapter (the whole run row: its config holds the
    token limit and batch size a replay must reuse), or None. What `serve --verify` and `export-model` check
    against."""
    done = next((r for r in store.follow_up_runs(train_run) if r["kind"] == "eval"
                 and r["status"] == RunStatus.COMPLETED.value), None)
    return store.run(done["run_id"]) if done else None


def _completed_train_run(store: StoreClient, run_id: str) -> dict:
    train = store.run(run_id)
    if train is None or train["kind"] != "train":
        raise ValueError(f"no training run '{run_id}' (see `doctune runs`)")
    if train["status"] != RunStatus.COMPLETED or not train["summary"].get("adapter"):
        raise ValueError(f"run {run_id} is {train['status']} and has no adapter; evaluate a completed run")
    return train


def judge_pairs(store: StoreClient, run_id: str, project: str, judge_cfg, key: Secret) -> dict:
    """Pairwise judgements of every (base, tuned) pair, in both orders; win/tie/loss with an interval."""
    if judge_cfg is None:
        return {"skipped": "no judge endpoint configured (pass --judge with --base-url/--model, and a key "
                           "for a remote endpoint)"}
    template = load_template(judge_cfg.prompts_dir, "pairwise")
    results = store.eval_results(run_id)
    requests = []
    for r in results:
        question = "\n\n".join(m["content"] for m in r["prompt"] if m["role"] == "user")
        ab = render_pairwise_messages(template, question, r["reference"], r["base_output"], r["tuned_output"],
                                      project, judge_cfg)
        ba = render_pairwise_messages(template, question, r["reference"], r["tuned_output"], r["base_output"],
                                      project, judge_cfg)
        requests.append((r, ab, ba))
    cached = store.cached_responses([m[1] for _, ab, ba in requests for m in (ab, ba)])
    _, workers = generator_pool(judge_cfg, key, project, run_id)
    refs, n = {}, 0
    for _, ab, ba in requests:
        for messages, key in (ab, ba):
            if key not in cached and key not in refs:
                refs[key] = workers[n % len(workers)].pairwise.remote(key, messages)
                n += 1
    answers = dict(zip(refs, ray.get(list(refs.values()))))
    store.record_synth_batch(run_id, [a["response"] for a in answers.values() if a["response"]],
                             [dict(x, chunk_id=None, task="pairwise", cache_key=a["cache_key"], attempt=i)
                              for a in answers.values() for i, x in enumerate(a["attempts"], start=1)], [], [], [])

    def winner(key: str) -> str | None:
        if key in cached:
            return parse_pairwise(cached[key]["content"])[0]
        return answers[key]["winner"]

    verdicts, by_set = {}, {}
    for r, (_, key_ab), (_, key_ba) in requests:
        w_ab, w_ba = winner(key_ab), winner(key_ba)
        if w_ab is None or w_ba is None:
            continue  # a judge request that kept failing: the pair stays unjudged
        # the first order showed base as A, the second showed tuned as A
        outcome = combine_pairwise(w_ab, w_ba)
        verdicts[(r["eval_set"], r["sample_id"])] = (outcome, {"base_first": w_ab, "tuned_first": w_ba})
        by_set.setdefault(r["eval_set"], []).append(outcome)
    store.set_eval_judgements(run_id, verdicts)
    return {"model": judge_cfg.endpoint.model, "sets": {s: win_rate(o) for s, o in by_set.items()},
            "unjudged": len(requests) - len(verdicts)}


def comparison_matrix(client, adapter_runs: list[str], eval_set: str = "test") -> dict:
    """Base and several adapters on one frozen eval set: each metric's mean per model, in one table.

    Uses each adapter's latest completed evaluation; all of them must have evaluated the same prompts
    (the same dataset version, split and limit), else the table would compare different questions.

    Raises:
        ValueError: an adapter without a completed evaluation, or evaluations of different prompt sets.
    """
    evals = {}
    for run in adapter_runs:
        done = [r for r in client.store.runs(None, 1000) if r["kind"] == "eval" and r["status"] == "completed"
                and client.store.run(r["run_id"])["config"].get("adapter_run") == run]
        if not done:
            raise ValueError(f"training run {run} has no completed evaluation; run `doctune eval --run {run}`")
        evals[run] = done[0]["run_id"]  # newest first
    prompt_sets = {run: sorted(r["sample_id"] for r in client.store.eval_results(e, eval_set))
                   for run, e in evals.items()}
    first = next(iter(prompt_sets.values()))
    if any(ids != first for ids in prompt_sets.values()):
        raise ValueError(f"the evaluations cover different '{eval_set}' prompts; evaluate every adapter on the "
                         f"same dataset version, split and --limit")
    table: dict[str, dict[str, float | None]] = {}
    for run, e in evals.items():
        rows = client.store.eval_results(e, eval_set)
        for side, name in (("base_scores", "base"), ("tuned_scores", run)):
            if name in table:
                continue
            table[name] = {}
            for m in METRICS:
                values = [r[side].get(m) for r in rows if r[side].get(m) is not None]
                table[name][m] = round(sum(values) / len(values), 6) if values else None
    return {"eval_set": eval_set, "prompts": len(first), "evaluations": evals, "table": table}
