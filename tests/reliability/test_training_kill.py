"""The training actor killed mid-run (like a crashed process: no checkpoint on the way out) resumes from its last
checkpoint and completes; at most the steps since that checkpoint are trained again, and its loss curve has
every step exactly once."""

import random
import re

import pytest
import ray

from actors import runs
from test_train_run import make_dataset, tiny, wait_for_step

SAVE_STEPS = 4
MAX_STEPS = 160  # on two threads the tiny model trains 60 steps in a few seconds: room for the kill


@pytest.mark.slow
def test_killed_training_actor_resumes_from_its_checkpoint(client, report):
    make_dataset(client)
    run = client.train("t", tiny(max_steps=MAX_STEPS, save_steps=SAVE_STEPS, eval_steps=1000), wait=False)["run_id"]
    wait_for_step(client, run, random.Random(7).randint(9, 30))
    actor = ray.get_actor(runs.actor_name(run))
    at = int(ray.get(actor.progress.remote())["step"])  # the trainer's own step (the store lags up to a second)
    ray.kill(actor)
    stored = max(client.metrics(run, ["loss"]).column("step").to_pylist())
    assert {r["run_id"]: r for r in client.runs()}[run]["status"] == "interrupted"
    resumed = client.train(None, resume_run=run)
    assert resumed["status"] == "completed" and resumed["global_step"] == MAX_STEPS, resumed.get("error")
    resume = [e for e in client.store.run_events(run) if e["kind"] == "resume"]
    assert resume and "checkpoint-" in resume[0]["detail"]["checkpoint"]
    from_step = int(re.search(r"checkpoint-(\d+)", resume[0]["detail"]["checkpoint"]).group(1))
    # the last complete checkpoint before the kill (one at `at` may still have been writing; a step or two may
    # finish between asking and killing)
    assert from_step % SAVE_STEPS == 0 and at - SAVE_STEPS <= from_step <= at + 2
    # the curve has each step once: steps after the checkpoint were trained again and replace the lost attempt's,
    # and those the store never received before the kill come back from the checkpoint's log
    steps = client.metrics(run, ["loss"]).column("step").to_pylist()
    assert sorted(steps) == list(range(1, MAX_STEPS + 1))
    report(killed_at_step=at, stored_before_kill=stored, resumed_from_step=from_step,
           steps_trained_again=max(0, at - from_step), steps_restored_from_checkpoint_log=max(0, from_step - stored),
           final_step=resumed["global_step"], status=resumed["status"])
