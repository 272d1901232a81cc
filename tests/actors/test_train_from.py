"""Continuing an adapter on a newer dataset version (`doctune train --from RUN`): its own run with its parent
recorded, bad requests refused with exit 2, and an evaluation of the continued adapter against the previous one on
the files that changed and those that did not. The tiny model, on the CPU."""

import pytest

from backend.eval_config import EvalConfig
from backend.train_config import load_preset
from actors.cli import main
from test_train_run import tiny

FILES = 6


def answer(k: int, edited: bool = False) -> str:
    return f"Berth rule {k} closes the slot window at {'23:45 on Sundays' if edited else f'{10 + k}:00 sharp'}."


def file_rows(k: int, chunk: str, text: str) -> list[dict]:
    """Six train rows, a val, a test and a probe row of file docs/p<k>.md, all from one chunk."""
    splits = ["train"] * 6 + ["val", "test", "probe"]
    return [{"sample_id": f"p{k}-{chunk}-{i}", "split": split, "path": f"docs/p{k}.md", "task": "qa", "language": "en",
             "instruction": f"When does berth rule {k} close the slot window? ({i})", "input": "", "output": text,
             "messages": None, "run_id": "r", "chunk_id": chunk, "start_line": 1, "end_line": 2,
             "generator": "test", "template_version": "qa@test"} for i, split in enumerate(splits)]


def two_versions(client, project="f") -> tuple[str, str]:
    """v1: files p0..p5; v2: p0's text edited (another chunk, another answer), p6 added, p1..p5 unchanged."""
    client.store.upsert_project(project, "/nowhere", None)
    old = [r for k in range(FILES) for r in file_rows(k, f"c{k}", answer(k))]
    v1 = client.store.create_dataset(project, old, source_runs=["r"], config={}, stats={})
    new = [r for r in old if r["path"] != "docs/p0.md"] + file_rows(0, "c0-edited", answer(0, edited=True))
    new += file_rows(FILES, f"c{FILES}", answer(FILES))
    v2 = client.store.create_dataset(project, new, source_runs=["r"], config={}, stats={}, parent=v1,
                                     operation="refresh")
    return v1, v2


def fake_completed_run(client, tmp_path, run_id: str, preset: str, adapter: bool, status: str = "completed") -> None:
    """A training run row of `preset` on v1; with `adapter`, an adapter folder holding a weights file."""
    folder = tmp_path / run_id / "adapter"
    if adapter:
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"")
    client.store.create_run(run_id, "train", "f", {"dataset": "v1", "train": load_preset(preset).to_dict()})
    client.store.finish_run(run_id, status, {"adapter": str(folder) if adapter else None})


def test_bad_requests_to_continue_exit_2_naming_the_fix(client, tmp_path, capsys):
    two_versions(client)
    fake_completed_run(client, tmp_path, "train-failed", "tiny", adapter=False, status="failed")
    fake_completed_run(client, tmp_path, "train-noadapter", "tiny", adapter=False)
    fake_completed_run(client, tmp_path, "train-ok", "tiny", adapter=True)
    fake_completed_run(client, tmp_path, "train-smol", "smol", adapter=True)
    home = ["--home", str(client.home)]
    cases = [(["train", "--from", "train-nope"], "no training run 'train-nope'"),
             (["train", "--from", "train-failed"], "is failed, not completed: finish it first"),
             (["train", "--from", "train-noadapter"], "has no adapter on disk"),
             (["train", "--from", "train-ok", "--preset", "smol"], "is not run train-ok's base"),
             (["train", "--from", "train-ok", "--resume", "train-failed"], "pass one of them"),
             (["eval", "--run", "train-ok", "--against", "train-smol"], "not an adapter of run train-ok's project "
                                                                        "and base model"),
             # checked before the refresh starts: a project whose runs left no adapter has nothing to continue
             (["refresh", "--project", "g", "--train"], "has none with its adapter on disk: refresh without --train")]
    client.store.upsert_project("g", "/nowhere", None)
    for argv, message in cases:
        assert main(home + argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert len(client.runs()) == 4  # nothing was started
    assert client.latest_adapter_run("f") == "train-smol" and client.latest_adapter_run("other") is None


@pytest.mark.slow
def test_a_continued_adapter_learns_the_change_and_is_compared_with_its_parent(client):
    v1, v2 = two_versions(client)
    parent = client.train("f", tiny(max_steps=30, learning_rate=1e-2, eval_steps=100, save_steps=100), version=v1)
    assert parent["status"] == "completed", parent.get("error")
    cfg = client.continue_config(parent["run_id"])
    cfg.training.max_steps = 20
    continued = client.train_from(parent["run_id"], cfg)  # the project's current version: v2
    assert continued["status"] == "completed", continued.get("error")
    run = client.run(continued["run_id"])
    assert run["config"]["parent_run"] == run["summary"]["parent_run"] == parent["run_id"]
    assert run["config"]["dataset"] == v2 and run["config"]["train"]["lora"] == parent_lora(client, parent["run_id"])
    assert "init_adapter" in [e["kind"] for e in client.run_events(continued["run_id"])]

    result = client.evaluate(continued["run_id"], EvalConfig(max_new_tokens=24, limits={"retention": 2}))
    assert result["status"] == "completed", result.get("error")
    against = client.run(result["run_id"])["summary"]["against"]
    assert against["previous_run"] == parent["run_id"] and against["previous_dataset"] == v1
    assert against["files"] == {"added": 1, "changed": 1, "deleted": 0, "unchanged": 5}
    assert against["changed_files"] == ["docs/p6.md", "docs/p0.md"]
    changed, unchanged = against["groups"]["changed"], against["groups"]["unchanged"]
    assert changed["sets"] == {"test": 2, "probe": 2} and unchanged["sets"] == {"test": 5, "probe": 5}
    # did it learn the change: on the edited and new answers the continued adapter's loss is below its parent's,
    # the whole 95% interval of the paired difference below zero
    loss = changed["metrics"]["loss"]
    assert loss["continued"] < loss["previous"] and loss["ci"][1] < 0 and loss["better"] == "lower", loss
    assert unchanged["metrics"]["loss"]["n"] == 10


def parent_lora(client, run_id: str) -> dict:
    return client.run(run_id)["config"]["train"]["lora"]
