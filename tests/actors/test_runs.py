"""The run lifecycle's refusals (`actors/runs.py`): a second start of a live run is refused with the run's id and how to
watch or stop it — never Ray's raw "name already taken", never by killing the live one."""

from __future__ import annotations

import threading

import pytest
import ray

from actors import runs


@ray.remote
class Waiting:
    """A run that works until it is cancelled."""

    def __init__(self):
        self.stop = threading.Event()

    def run(self) -> dict:
        self.stop.wait(60)
        return {"status": "cancelled"}

    def progress(self) -> dict:
        return {"status": "running"}

    def cancel(self) -> None:
        self.stop.set()


def test_a_second_start_of_a_live_run_is_refused_naming_it(ray_session):
    handle = runs.launch(Waiting, "synth-test-busy")
    try:
        assert ray.get(handle.actor.progress.remote()) == {"status": "running"}
        said = r"run synth-test-busy is still running.*`doctune runs`.*`doctune cancel synth-test-busy`"
        with pytest.raises(runs.RunBusy, match=said):
            runs.ensure_not_running("synth-test-busy")  # a second `doctune synth` resuming the same run
        with pytest.raises(runs.RunBusy, match=said):
            runs.launch(Waiting, "synth-test-busy")  # two commands that passed that check at once
        assert ray.get(handle.actor.progress.remote()) == {"status": "running"}  # the live run goes on
    finally:
        ray.get(handle.actor.cancel.remote())
        assert runs.watch(handle) == {"status": "cancelled"}
        ray.kill(handle.actor)
