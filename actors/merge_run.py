"""The merge run: a training run's adapter merged into its base model (16-bit), GGUF where llama.cpp is; and
the export run (`doctune export-model`), a merge run that writes the whole bundle of `backend/bundle.py` and
checks that the merged model answers the evaluation's prompts exactly as the evaluation stored them.

Loading a model is GPU work, so both run in a run actor (the lifecycle of `actors/runs.py`) holding the GPU
where the cluster has one, never in the command that asked for it.
"""

from __future__ import annotations

from pathlib import Path

import ray

from backend.gguf import convert_to_gguf, find_llama_cpp, quantize_binary

from backend.run_status import RunStatus, new_run_id
from actors import runs
from actors.store_actor import StoreClient


@ray.remote
class MergeRun:
    """Merges one adapter; the summary names the merged folder (and the GGUF file)."""

    def __init__(self, home: str, run_id: str, adapter: str, out: str, dtype: str, gguf: dict | None,
                 train_run: str):
        self.store = StoreClient(Path(home))
        self.run_id, self.adapter, self.out, self.dtype, self.gguf = run_id, Path(adapter), Path(out), dtype, gguf
        self.train_run = train_run

    def run(self) -> dict:
        from backend.train import merge_to_16bit  # torch: only in the process that merges

        with runs.recorded(self.store, self.run_id, {"run_id": self.train_run}) as summary:
            summary["merged"] = str(merge_to_16bit(self.adapter, None, self.out, dtype=self.dtype))
            if self.gguf:
                files = convert_to_gguf(self.out, self.out.parent / "gguf", **self.gguf)
                summary["gguf"], summary["gguf_files"] = str(files[-1]), [str(f) for f in files]
        return summary

    def progress(self) -> dict:
        return {"status": RunStatus.RUNNING.value}  # an actor still waiting for its GPU answers no call at all

    def cancel(self) -> None:
        """A merge is one load and one save: it finishes."""


def gguf_settings(gguf: bool, llama_cpp: str | Path | None, gguf_type: str | None) -> dict | None:
    """The converter's settings, resolved here (the actor's environment may lack UNSLOTH_LLAMA_CPP_PATH), so a
    missing llama.cpp fails before any model is loaded: the folder, and the type (q4_k_m where llama-quantize is
    built, else q8_0, which the converter writes itself).

    Raises:
        LlamaCppMissing: no llama.cpp converter where it was looked for.
    """
    if not gguf:
        return None
    folder = find_llama_cpp(llama_cpp)
    return {"llama_cpp": str(folder),
            "quantization": gguf_type or ("q4_k_m" if quantize_binary(folder) else "q8_0")}


def _adapter_of(client, train_run: str) -> tuple[dict, str]:
    run = client.store.run(train_run)
    adapter = (run or {}).get("summary", {}).get("adapter")
    if not run or run["kind"] != "train" or not adapter:
        raise ValueError(f"run '{train_run}' has no adapter; only a completed training run can be merged")
    return run, adapter


def start_merge_run(client, train_run: str, out: str | Path | None = None, dtype: str = "bf16",
                    gguf: bool = False, wait: bool = True, llama_cpp: str | Path | None = None,
                    gguf_type: str | None = None) -> dict:
    """Merge a completed training run's adapter in a run of kind `merge`, and wait for it unless `wait` is off
    (then returns `run_id` of the merge run and its status once the actor is started).

    Returns `run_id` (the training run), `merged` (the folder) and `gguf` (the file) where asked for.

    Raises:
        ValueError: no completed training run with an adapter; LlamaCppMissing: GGUF asked for without llama.cpp.
    """
    run, adapter = _adapter_of(client, train_run)
    gguf_cfg = gguf_settings(gguf, llama_cpp, gguf_type)
    out = Path(out) if out else client.home / "runs" / train_run / f"merged-{dtype}"
    run_id = new_run_id("merge")
    client.store.create_run(run_id, "merge", run["project"], {"train_run": train_run, "adapter": adapter,
                                                              "out": str(out), "dtype": dtype, "gguf": gguf_cfg})
    client.store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(MergeRun, run_id, str(client.home), run_id, adapter, str(out), dtype, gguf_cfg, train_run,
                         resources=runs.model_resources())
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "out": str(out), "detached": True}
    return runs.watch(handle)


@ray.remote
class ExportModelRun:
    """Writes one bundle (`backend/bundle.py`), then replays the evaluation's prompts through its merged model."""

    def __init__(self, home: str, run_id: str, train: dict, out: str, dtype: str, gguf: dict | None,
                 evaluation: dict | None):
        self.store = StoreClient(Path(home))
        self.run_id, self.train, self.out, self.dtype, self.gguf = run_id, train, Path(out), dtype, gguf
        self.evaluation = evaluation

    def run(self) -> dict:
        import json
        import shutil

        from transformers import AutoTokenizer  # torch: only in the process that merges

        from backend import bundle
        from backend.train import base_of, merge_to_16bit

        train_run, adapter = self.train["run_id"], Path(self.train["summary"]["adapter"])
        with runs.recorded(self.store, self.run_id, {"run_id": train_run, "export_run": self.run_id,
                                                           "bundle": str(self.out)}) as summary:
            out = self.out
            out.mkdir(parents=True, exist_ok=True)
            (out / "manifest.json").unlink(missing_ok=True)  # a bundle being rewritten is not whole until the end
            for stale in ("merged", "gguf"):  # nor may it keep files of the bundle it replaces
                shutil.rmtree(out / stale, ignore_errors=True)
            merged = merge_to_16bit(adapter, None, out / "merged", dtype=self.dtype)
            bundle.copy_adapter(adapter, out / "adapter")
            gguf = convert_to_gguf(merged, out / "gguf", **self.gguf) if self.gguf else []
            base = base_of(adapter)
            model_cfg = self.train["config"]["train"]
            architecture = json.loads((merged / "config.json").read_text())["architectures"][0]
            rendered = AutoTokenizer.from_pretrained(merged, local_files_only=True).apply_chat_template(
                bundle.SAMPLE_CONVERSATION, tokenize=False, add_generation_prompt=True)
            modelfile, uses_adapter = bundle.ollama_modelfile(architecture, base, rendered)
            (out / "Modelfile").write_text(modelfile)
            name = f"doctune-{train_run}"
            (out / "README.md").write_text(bundle.readme(
                run=train_run, name=name, base=base, base_name=model_cfg["model"]["name_or_path"], out=out.resolve(),
                dtype=self.dtype, lora_rank=model_cfg["lora"]["r"], ollama_adapter=uses_adapter,
                architecture=architecture, gguf=gguf))
            summary.update(merged=str(merged), adapter=str(out / "adapter"), gguf=[str(f) for f in gguf],
                           ollama="adapter" if uses_adapter else "merged", verify=self._verify(merged))
            bundle.write_manifest(out, {"run": train_run, "project": self.train["project"],
                                        "dataset": self.train["config"].get("dataset"),
                                        "base": {"name": model_cfg["model"]["name_or_path"], "path": str(base),
                                                 "architecture": architecture},
                                        "dtype": self.dtype, "verify": summary["verify"]})
        return summary

    def _verify(self, merged: Path) -> dict:
        """The merged model's greedy answers to the latest evaluation's prompts against the stored ones."""
        from backend import bundle
        from backend.verify import compare

        if self.evaluation is None:
            return {"skipped": "verification off (--no-verify)"}
        if "skipped" in self.evaluation:
            return self.evaluation
        rows = self.store.eval_results(self.evaluation["run_id"])
        answers = bundle.replay_evaluation(merged, rows, max_new_tokens=self.evaluation["max_new_tokens"],
                                           batch_size=self.evaluation["batch_size"])
        return {"eval_run": self.evaluation["run_id"], **compare(rows, answers, side="tuned")}

    def progress(self) -> dict:
        return {"status": RunStatus.RUNNING.value}

    def cancel(self) -> None:
        """An export is a merge, a copy and a replay: it finishes."""


def latest_evaluation(client, train_run: str) -> dict:
    """What verification replays: the training run's latest completed evaluation, with its token limit and batch
    size (so greedy text is identical), or {"skipped": why} when it has none."""
    from backend.eval_config import EvalConfig
    from actors.eval_run import latest_completed_eval

    evaluation = latest_completed_eval(client.store, train_run)
    if evaluation is None:
        return {"skipped": f"run {train_run} has no completed evaluation to compare with; run `doctune eval "
                           f"{train_run}` first"}
    config = evaluation["config"]
    return {"run_id": evaluation["run_id"], "max_new_tokens": config["max_new_tokens"],
            # evaluations stored before their batch size was recorded used the default
            "batch_size": config.get("batch_size", EvalConfig().batch_size)}


def start_export_model_run(client, train_run: str, out: str | Path, dtype: str = "bf16", gguf: bool = False,
                           verify: bool = True, llama_cpp: str | Path | None = None, gguf_type: str | None = None,
                           wait: bool = True) -> dict:
    """Write the bundle of a completed training run into `out`, in a run of kind `merge` (it merges, and shows
    beside the run's other merges), and wait for it unless `wait` is off.

    Returns the summary: `bundle`, `merged`, `adapter`, `gguf` (files), `ollama` (adapter or merged), `verify`
    ({"passed", "checked", "identical", "differences", "eval_run"} or {"skipped": why}).

    Raises:
        ValueError: no completed training run with an adapter; `out` is a file; LlamaCppMissing: GGUF asked for
            without llama.cpp.
    """
    train, _ = _adapter_of(client, train_run)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder for the bundle (it is created when missing)")
    gguf_cfg = gguf_settings(gguf, llama_cpp, gguf_type)
    evaluation = latest_evaluation(client, train_run) if verify else None
    run_id = new_run_id("merge")
    client.store.create_run(run_id, "merge", train["project"], {"train_run": train_run, "adapter": train["summary"][
        "adapter"], "out": str(out), "dtype": dtype, "gguf": gguf_cfg, "bundle": True, "verify": evaluation})
    client.store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(ExportModelRun, run_id, str(client.home), run_id, train, str(out), dtype, gguf_cfg,
                         evaluation, resources=runs.model_resources())
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "out": str(out), "detached": True}
    return runs.watch(handle)
