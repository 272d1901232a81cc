"""Driving `doctune dashboard` in Debian's chromium with playwright: start and stop it, wait for a page."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO

CHROMIUM = "/usr/bin/chromium"
PAGES = ("overview", "dataset", "synthesis", "training", "compare", "evaluation")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


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




def client_answer(home: Path, method: str, *args: str):
    """What the client API (`actors.client.DocTune`) answers for this home, asked from a process of its own that
    joins the dashboard's cluster: a browser test waits on a run's state there, never on a guess of how fast
    this machine draws a page."""
    code = ("import json, sys; from actors.client import DocTune; dt = DocTune(sys.argv[1]); "
            "print(json.dumps(getattr(dt, sys.argv[2])(*sys.argv[3:]), default=str))")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code, str(home), method, *args], capture_output=True, text=True,
                         timeout=180, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


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
