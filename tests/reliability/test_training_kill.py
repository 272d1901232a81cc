"""The training actor killed mid-run (like a crashed process: no checkpoint on the way out) resumes from its last
checkpoint and completes; at most the steps since that checkpoint are trained again."""

import random
import re

import pytest
import ray

from test_train_run import make_dataset, tiny, wait_for_step

SAVE_STEPS = 4
MAX_STEPS = 60


@pytest.mark.slow
def test_killed_training_actor_resumes_from_its_checkpoint(client, report):
    make_dataset(client)
    run = client.train("t", tiny(max_steps=MAX_STEPS, save_steps=SAVE_STEPS, eval_steps=1000), wait=False)["run_id"]
    wait_for_step(client, run, random.Random(7).randint(9, 30))
    ray.kill(ray.get_actor(f"train-{run}"))
    killed_at = max(client.metrics(run, ["loss"]).column("step").to_pylist())
    assert {r["run_id"]: r for r in client.runs()}[run]["status"] == "interrupted"
    resumed = client.train(None, resume_run=run)
    assert resumed["status"] == "completed" and resumed["global_step"] == MAX_STEPS, resumed.get("error")
    resume = [e for e in client.store.run_events(run) if e["kind"] == "resume"]
    assert resume and "checkpoint-" in resume[0]["detail"]["checkpoint"]
    from_step = int(re.search(r"checkpoint-(\d+)", resume[0]["detail"]["checkpoint"]).group(1))
    # the last checkpoint before the kill (metrics reach the store about once a second, so `killed_at` may lag)
    assert from_step % SAVE_STEPS == 0 and from_step >= killed_at - SAVE_STEPS - 4
    steps = client.metrics(run, ["loss"]).column("step").to_pylist()
    assert set(steps) == set(range(1, MAX_STEPS + 1))  # every step has its loss, before or after the kill
    report(killed_at_step=killed_at, resumed_from_step=from_step, steps_trained_again=max(0, killed_at - from_step),
           final_step=resumed["global_step"], status=resumed["status"])
