"""The merge run: a training run's adapter merged into its base model (16-bit), and GGUF where CUDA is.

Loading a model is GPU work, so it runs in a run actor (the lifecycle of `actors/runs.py`) holding the GPU
where the cluster has one, never in the command that asked for it.
"""

from __future__ import annotations

from pathlib import Path

import ray

from backend.run_status import RunStatus, new_run_id
from actors import runs
from actors.store_actor import StoreClient


@ray.remote
class MergeRun:
    """Merges one adapter; the summary names the merged folder (and the GGUF file)."""

    def __init__(self, home: str, run_id: str, adapter: str, out: str, dtype: str, gguf: bool, train_run: str):
        self.store = StoreClient(Path(home))
        self.run_id, self.adapter, self.out, self.dtype, self.gguf = run_id, Path(adapter), Path(out), dtype, gguf
        self.train_run = train_run

    def run(self) -> dict:
        from backend.train import export_gguf, merge_to_16bit  # torch: only in the process that merges

        with runs.recorded(self.store, self.run_id, {"run_id": self.train_run}) as summary:
            summary["merged"] = str(merge_to_16bit(self.adapter, None, self.out, dtype=self.dtype))
            if self.gguf:
                summary["gguf"] = str(export_gguf(self.adapter, self.out.parent / "gguf"))
        return summary

    def progress(self) -> dict:
        return {"status": RunStatus.RUNNING.value}  # an actor still waiting for its GPU answers no call at all

    def cancel(self) -> None:
        """A merge is one load and one save: it finishes."""


def start_merge_run(client, train_run: str, out: str | Path | None = None, dtype: str = "bf16",
                    gguf: bool = False, wait: bool = True) -> dict:
    """Merge a completed training run's adapter in a run of kind `merge`, and wait for it unless `wait` is off
    (then returns `run_id` of the merge run and its status once the actor is started).

    Returns `run_id` (the training run), `merged` (the folder) and `gguf` (the file) where asked for.

    Raises:
        ValueError: no completed training run with an adapter.
        RuntimeError: GGUF asked for without CUDA and Unsloth.
    """
    run = client.store.run(train_run)
    adapter = (run or {}).get("summary", {}).get("adapter")
    if not run or run["kind"] != "train" or not adapter:
        raise ValueError(f"run '{train_run}' has no adapter; only a completed training run can be merged")
    out = Path(out) if out else client.home / "runs" / train_run / f"merged-{dtype}"
    run_id = new_run_id("merge")
    client.store.create_run(run_id, "merge", run["project"], {"train_run": train_run, "adapter": adapter,
                                                              "out": str(out), "dtype": dtype, "gguf": gguf})
    client.store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(MergeRun, run_id, str(client.home), run_id, adapter, str(out), dtype, gguf, train_run,
                         resources=runs.model_resources())
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "out": str(out), "detached": True}
    return runs.watch(handle)
