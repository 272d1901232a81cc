"""Driving `doctune dashboard` in Debian's chromium with playwright: start and stop it, wait for a page."""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from conftest import REPO, run_cli

CHROMIUM = "/usr/bin/chromium"
PAGES = ("overview", "dataset", "synthesis", "training", "compare", "evaluation")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


@contextmanager
def home_cluster(home: Path):
    """This home's Ray cluster, started before a test's first command so that every command, the dashboard and the
    client process join it (one Ray start a test, not one a command); stopped afterwards, its client process first."""
    out = run_cli("cluster", "start", home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    try:
        yield home
    finally:
        close_client(home)
        run_cli("cluster", "stop", home=home)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(home: Path, port: int, env: dict) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), "dashboard", "--port", str(port)]
    full = dict(os.environ, **env)
    full.pop("RAY_ADDRESS", None)
    log = open(home / f"dashboard-{port}.log", "ab")
    proc = subprocess.Popen(cmd, env=full, stdout=log, stderr=log, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / f"dashboard-{port}.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the dashboard did not answer within 120 s")


def kill(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def settle(page) -> None:
    """Wait until Streamlit has finished running the page's script (twice: a run may start another)."""
    for _ in range(2):
        page.wait_for_selector(DONE, timeout=90_000)
        page.wait_for_selector('[data-testid="stSpinner"]', state="detached", timeout=90_000)
        page.wait_for_timeout(300)


def url(base: str, name: str) -> str:
    return f"{base}/" if name == "overview" else f"{base}/{name}"  # the default page lives at the root


def errors_on(page) -> list[str]:
    return page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]').all_inner_texts()


def visit(page, base: str, name: str, *, secret: str | None = None, shot: Path | None = None) -> str:
    """Open a page, wait for it, check it shows no error (and not `secret`); returns its visible text."""
    page.goto(url(base, name))
    settle(page)
    assert errors_on(page) == [], f"{name}: {errors_on(page)}"
    if secret is not None:
        assert secret not in page.content(), f"the secret reached the browser on {name}"
    if shot:
        page.screenshot(path=str(shot), full_page=True)
    return page.inner_text("body")  # tables are drawn on canvas: their cells are not in the text


def browser_session():
    """(playwright context manager, launch function) for chromium with the flags this machine needs."""
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def launch(p):
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium "
                             "(apt-get install chromium)")
    return p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)




# one line in, one line out: a call `[method, args]` as JSON, its answer as `ANSWER` + JSON (a traceback as `FAILED`)
CLIENT_LOOP = """
import json, sys, traceback
from actors.client import DocTune
dt = DocTune(sys.argv[1])
for line in sys.stdin:
    method, args = json.loads(line)
    try:
        print("ANSWER" + json.dumps(getattr(dt, method)(*args), default=str), flush=True)
    except Exception:
        print("FAILED" + json.dumps(traceback.format_exc()), flush=True)
"""


class ClientProcess:
    """The client API (`actors.client.DocTune`) of a home in a process of its own that joins the home's cluster
    once and then answers call after call: a poll costs a round trip to the store actor, not a Python start, the
    client's imports and a Ray join each time (measured: bench/bench_test_polling.py)."""

    def __init__(self, home: Path):
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        self.log = open(home / "client-process.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT_LOOP, str(home)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=REPO,
                                     start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        # a thread reads the answers, so that each wait for one is bounded; None: the process ended
        threading.Thread(target=lambda: [*map(self.lines.put, self.proc.stdout), self.lines.put(None)],
                         daemon=True).start()

    def ask(self, method: str, *args, timeout_s: float = 180):
        self.proc.stdin.write(json.dumps([method, list(args)]) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while True:  # lines other than answers (a library's notice on stdout) are skipped
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the client process did not answer {method} within {timeout_s:.0f} s")
            if line is None:
                raise AssertionError(f"the client process ended ({self.proc.wait()}) before answering {method}; "
                                     f"see {self.log.name}")
            if line.startswith("FAILED"):
                raise AssertionError(f"{method}{args}: {json.loads(line[6:])}")
            if line.startswith("ANSWER"):
                return json.loads(line[6:])

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


_clients: dict[Path, ClientProcess] = {}


def client_answer(home: Path, method: str, *args: str):
    """What the client API (`actors.client.DocTune`) answers for this home, asked from a process of its own that
    joins the dashboard's cluster (one per home, started on the first question and again if it ended): a browser
    test waits on a run's state there, never on a guess of how fast this machine draws a page."""
    client = _clients.get(home)
    if client is None or client.proc.poll() is not None:
        client = _clients[home] = ClientProcess(home)
    return client.ask(method, *args)


def close_client(home: Path) -> None:
    """End this home's client process (before its cluster stops)."""
    client = _clients.pop(home, None)
    if client is not None:
        client.close()


atexit.register(lambda: [close_client(h) for h in list(_clients)])


def wait_until(ask, done, what: str, timeout_s: float = 900, every_s: float = 2):
    """`ask()` again until `done(answer)`; the last answer. The bound is generous: it only ends a hung test."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = ask()
        if done(answer):
            return answer
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s; last: {answer}"
        time.sleep(every_s)


def run_of(home: Path, project: str, run_id: str) -> dict:
    return next(r for r in client_answer(home, "runs", project) if r["run_id"] == run_id)
