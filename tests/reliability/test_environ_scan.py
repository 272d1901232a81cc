"""Secrets only where they are used: with an API key in the shell's environment, `doctune cluster start`, the
dashboard, then a synthesis and a judged curation through that cluster against the fake server; meanwhile every
process of this user whose command line mentions ray, doctune or streamlit (the daemon, GCS, raylet, the workers
running the runs, the dashboard) is read from /proc/<pid>/environ, and none holds the key. The commands the test
hands the key to are the exception: the user gave it to them. The dashboard gets it over a pipe."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from backend.endpoint_config import KEY_PIPE_VARIABLE, api_key, hand_over_key, take_handed_key
from conftest import run_cli
from tests import dashboard_browser as browser
from tests.fake_llm import FakeLLMServer

KEY = "sk-doctune-environ-SECRET-4321"


def ray_and_doctune_processes() -> dict[int, tuple[str, bytes]]:
    """pid -> (command line, environment) of this user's processes that mention ray, doctune or streamlit."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != os.getuid():
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if any(word in cmdline for word in ("ray", "doctune", "streamlit")):
                found[int(proc.name)] = (cmdline, (proc / "environ").read_bytes())
        except OSError:  # gone meanwhile
            continue
    return found


class EnvironScanner(threading.Thread):
    """Scans every `interval_s` until stopped; keeps which processes it read and which held the key."""

    def __init__(self, home: Path, exempt: set[int], interval_s: float = 0.3):
        super().__init__(daemon=True)
        self.home, self.exempt, self.interval_s = str(home), exempt, interval_s
        self.scanned: dict[int, str] = {}  # every pid read
        self.ours: dict[int, str] = {}  # those of this home's cluster (the home's token path, or --home)
        self.holding: dict[int, str] = {}
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.scan()
            self.stopped.wait(self.interval_s)

    def scan(self):
        for pid, (cmdline, environ) in ray_and_doctune_processes().items():
            if pid in self.exempt or pid == os.getpid():
                continue
            self.scanned[pid] = cmdline
            if self.home in cmdline or self.home.encode() in environ:
                self.ours[pid] = cmdline
            if KEY.encode() in environ:
                self.holding[pid] = cmdline


def doctune(*args: str, home: Path, env: dict) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return out + err


@pytest.mark.slow
def test_no_ray_process_holds_the_key(tmp_path, report):
    home = tmp_path / "h"
    env = {"DOCTUNE_API_KEY": KEY}
    assert run_cli("cluster", "start", home=home, env=env).returncode == 0  # started from a shell holding the key
    exempt: set[int] = set()
    scanner = EnvironScanner(home, exempt)
    dashboard = None
    try:
        assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
        dashboard = browser.start_dashboard(home, browser.free_port(), env)  # execs Streamlit in its own pid
        scanner.start()
        with FakeLLMServer(api_key=KEY, latency_s=0.2) as server:
            endpoint = ["--base-url", server.base_url, "--model", "fake-model"]
            synth = doctune("synth", "--project", "s", "--generator", "openai", *endpoint, "--concurrency", "2",
                            "--max-chunks", "8", home=home, env=env)
            exempt.add(synth.pid)
            finish(synth)
            cfg = tmp_path / "judge.yaml"
            cfg.write_text(f"synth:\n  generator: openai\n  base_url: {server.base_url}\n  model: fake-model\n")
            curate = doctune("curate", "--project", "s", "--judge", "--config", str(cfg), home=home, env=env)
            exempt.add(curate.pid)
            finish(curate)
            requests = server.request_log
        scanner.stopped.set()
        scanner.join()
        scanner.scan()  # once more, with the runs' workers idle
    finally:
        scanner.stopped.set()
        if dashboard is not None:
            browser.kill(dashboard)
        run_cli("cluster", "stop", home=home)

    # the key reached the generators and the judge (in memory) ...
    assert requests and all(r["authorization"] == f"Bearer {KEY}" for r in requests)
    # ... and no process of the cluster has it in its environment
    assert scanner.holding == {}, f"the key is in the environment of {scanner.holding}"
    roles = " ".join(scanner.ours.values())
    assert "gcs_server" in roles and "raylet" in roles and "actors.cluster_daemon" in roles and "ray::" in roles
    assert "streamlit" in scanner.scanned[dashboard.pid]
    report(processes_scanned=len(scanner.scanned), of_this_cluster=len(scanner.ours),
           workers=sum("ray::" in c for c in scanner.ours.values()), api_requests_with_key=len(requests),
           key_found=len(scanner.holding))


def test_the_dashboard_gets_the_key_over_a_pipe(monkeypatch):
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    env = hand_over_key(dict(os.environ))
    assert KEY not in env.values() and not any(k.endswith("_API_KEY") for k in env)
    monkeypatch.delenv("DOCTUNE_API_KEY")
    monkeypatch.setenv(KEY_PIPE_VARIABLE, env[KEY_PIPE_VARIABLE])
    take_handed_key()  # what dashboard/app.py does on its first run
    assert api_key() == KEY and KEY_PIPE_VARIABLE not in os.environ
    take_handed_key()  # later reruns: nothing to take
    assert api_key() == KEY
