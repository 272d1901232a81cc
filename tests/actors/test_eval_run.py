"""Evaluation through the run actor: the tiny model trained on a fixed answer, base against tuned."""

import pytest

from backend.endpoint_config import EndpointConfig
from backend.eval_config import EvalConfig
from tests.fake_llm import FakeLLMServer
from test_train_run import tiny

ANSWER = "Use tidemark.berth() with the ZEBRA window, then call seal_with() before noon."


def fixed_answer_dataset(client, project="e", n=64):
    """Every train, val and test row has the same answer; the probe split asks about it in other words (chunk
    `c`, which the train rows come from, and `other`, which none does); the project's identifier index knows
    `tidemark.berth` and `tidemark.seal_with`."""
    from backend.repo_index import build_index

    client.store.upsert_project(project, "/nowhere", None)
    rows = [{"sample_id": f"s{i:03d}", "split": ["train", "train", "train", "val", "test"][i % 5],
             "path": f"docs/p{i % 9}.md", "task": "qa", "language": "en",
             "instruction": f"How do I book berth number {i} for a reefer container?", "input": "", "output": ANSWER,
             "messages": None, "run_id": "r", "chunk_id": "c", "start_line": 1, "end_line": 2,
             "generator": "test", "template_version": "qa@test"} for i in range(n)]
    rows += [{"sample_id": f"p{i:03d}", "split": "probe", "path": "docs/p0.md", "task": "probe", "language": "en",
              "instruction": f"Which window goes with berth booking number {i}?", "input": "", "output": ANSWER,
              "fact": "ZEBRA", "messages": None, "run_id": "r", "chunk_id": "c" if i < 6 else "other",
              "start_line": 1, "end_line": 2, "generator": "test", "template_version": "probe@test"} for i in range(8)]
    code = "def berth(window):\n    pass\n\n\ndef seal_with(seal):\n    pass\n"
    client.store.replace_identifiers(project, build_index([{"path": "tidemark/__init__.py", "kind": "python",
                                                            "text": code, "symbol": None}]))
    return client.store.create_dataset(project, rows, source_runs=["r"], config={}, stats={})


@pytest.mark.slow
def test_tuned_beats_base_with_intervals_and_a_judge(client):
    fixed_answer_dataset(client)
    trained = client.train("e", tiny(max_steps=40, learning_rate=1e-2, eval_steps=100, save_steps=100))
    assert trained["status"] == "completed", trained.get("error")
    with FakeLLMServer() as server:
        judge = EndpointConfig(base_url=server.base_url, model="fake-model", concurrency=4, rpm=6000)
        result = client.evaluate(trained["run_id"], EvalConfig(limit=8, max_new_tokens=32, judge=True, endpoint=judge))
        pairwise = server.stats()["pairwise"]
    assert result["status"] == "completed", result.get("error")
    test = result["test"]["metrics"]
    assert test["rouge_l"]["tuned"] > test["rouge_l"]["base"] and test["rouge_l"]["ci"][0] > 0
    assert test["loss"]["tuned"] < test["loss"]["base"] and test["loss"]["ci"][1] < 0
    assert test["loss"]["better"] == "lower"
    assert "retention" in result and result["retention"]["n"] == 8
    assert result["sets"] == ["test", "probe", "retention"]
    probe = result["probe"]
    assert probe["n"] == 6  # the probes of chunk `other` ask about nothing this run trained on
    assert {"fact_accuracy", "api_recall", "rouge_l", "loss"} <= set(probe["metrics"])
    assert probe["metrics"]["api_recall"]["n"] == 6 and probe["metrics"]["fact_accuracy"]["better"] == "higher"
    assert test["api_recall"]["tuned"] > test["api_recall"]["base"]  # the answer names tidemark.berth()
    rows = client.eval_results(result["run_id"], "test")
    assert len(rows) == 8 and all(r["base_output"] != r["tuned_output"] for r in rows)
    assert all(r["tuned_scores"]["rouge_l"] >= r["base_scores"]["rouge_l"] for r in rows)
    judged = result["judge"]["sets"]["test"]
    assert judged["win"] + judged["tie"] + judged["loss"] == 8 and pairwise == 2 * 22  # both orders, three sets
    assert {r["judge"] for r in rows} <= {"win", "tie", "loss"}
    stored = client.store.run(result["run_id"])
    assert stored["status"] == "completed" and stored["summary"]["judge"]["model"] == "fake-model"


def test_eval_refuses_what_it_cannot_evaluate(client):
    fixed_answer_dataset(client)
    with pytest.raises(ValueError, match="no training run"):
        client.evaluate("train-nope")


CODE_ANSWER = "```python\nimport mylib\n```"  # short enough for a 2-layer model to learn exactly


@pytest.mark.slow
def test_pass_rate_runs_outputs_against_the_repository_and_the_matrix_compares_adapters(client, tmp_path):
    from conftest import write_tree

    root = write_tree(tmp_path / "repo", {"mylib/__init__.py": "def double(x):\n    return 2 * x\n"})
    client.store.upsert_project("c", str(root), None)
    rows = [{"sample_id": f"s{i:03d}", "split": ["train", "train", "train", "val", "test"][i % 5],
             "path": f"docs/p{i % 9}.md", "task": "codegen", "language": "en", "exec_status": "pass",
             "instruction": f"Show me how to double the number {i} with mylib.", "input": "", "output": CODE_ANSWER,
             "messages": None, "run_id": "r", "chunk_id": "c", "start_line": 1, "end_line": 2,
             "generator": "test", "template_version": "codegen@test"} for i in range(60)]
    client.store.create_dataset("c", rows, source_runs=["r"], config={}, stats={})
    strong = client.train("c", tiny(max_steps=40, learning_rate=1e-2, eval_steps=100, save_steps=100))
    weak = client.train("c", tiny(max_steps=3, eval_steps=100, save_steps=100))
    for run in (strong, weak):
        assert run["status"] == "completed", run.get("error")
    evaluated = client.evaluate(strong["run_id"], EvalConfig(limit=6, max_new_tokens=40))
    # every test prompt has an executable check; the 2-layer model rarely writes runnable code, so only the
    # mechanics are checked here (test_evaluate.py checks code_passes itself)
    passes = evaluated["test"]["metrics"]["pass_rate"]
    assert passes["n"] == 6 and passes["base"] == 0.0 and 0.0 <= passes["tuned"] <= 1.0
    client.evaluate(weak["run_id"], EvalConfig(limit=6, max_new_tokens=40))
    matrix = client.comparison_matrix([strong["run_id"], weak["run_id"]])
    assert list(matrix["table"]) == ["base", strong["run_id"], weak["run_id"]] and matrix["prompts"] == 6
    table = matrix["table"]
    assert table[strong["run_id"]]["rouge_l"] > table[weak["run_id"]]["rouge_l"] >= table["base"]["rouge_l"]
    client.evaluate(weak["run_id"], EvalConfig(limit=3, max_new_tokens=8))  # a different prompt set
    with pytest.raises(ValueError, match="different"):
        client.comparison_matrix([strong["run_id"], weak["run_id"]])
