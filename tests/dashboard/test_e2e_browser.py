"""The dashboard in a real browser (Debian's chromium, driven by playwright), as a team uses it.

`doctune dashboard` is started as a user starts it, on a home with the sample repository ingested. The test
visits every page, starts a heuristic synthesis from the form and watches it to its dataset version, then
starts an API run (against the fake LLM server on 127.0.0.1), kills the dashboard's process mid-run, starts
the dashboard again and sees the same run finish: closing or refreshing a page never stops a run. With an
API key in the dashboard's environment, no page's HTML contains it. Screenshots go to
`test-artifacts/dashboard/` (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests.fake_llm import FakeLLMServer

CHROMIUM = "/usr/bin/chromium"
KEY = "sk-dashboard-e2e-SECRET-4242"
SHOTS = REPO / "test-artifacts" / "dashboard"
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


def visit(page, base: str, name: str, shot: str | None = None) -> str:
    page.goto(url(base, name))
    settle(page)
    assert errors_on(page) == [], f"{name}: {errors_on(page)}"
    assert KEY not in page.content(), f"the API key reached the browser on {name}"
    if shot:
        page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    return page.inner_text("body")  # tables are drawn on canvas: their cells are not in the text


def start_from_form(page, base: str, *, max_chunks: int, generator: str = "heuristic", base_url: str = "",
                    concurrency: int | None = None) -> str:
    """Fill the synthesis form, ask for the estimate, start; returns the page text after starting."""
    page.goto(f"{base}/synthesis")
    settle(page)
    if generator != "heuristic":
        page.get_by_role("combobox", name="Generator").click()
        page.get_by_role("option", name=generator).click()
        page.get_by_label("Base URL (openai)").fill(base_url)
        page.get_by_label("Model (openai)").fill("fake-model")
    page.get_by_label("Max chunks (0: all)").fill(str(max_chunks))
    if concurrency:
        page.get_by_label("Concurrency").fill(str(concurrency))
    page.get_by_text("Start a new run even if an unfinished one has these settings").click()
    page.get_by_role("button", name="Estimate cost").click()
    page.get_by_role("button", name="Start synthesis").wait_for(timeout=60_000)
    assert "Requests" in page.inner_text("body") and "Cost (est.)" in page.inner_text("body")
    page.get_by_role("button", name="Start synthesis").click()
    page.get_by_text("it goes on if you leave this page").wait_for(timeout=60_000)
    return page.inner_text("body")


@pytest.mark.slow
def test_dashboard_in_a_real_browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    out = run_cli("ingest", str(SAMPLE_REPO), "--project", "sample", home=home)
    assert out.returncode == 0, out.stderr
    env = {"DOCTUNE_API_KEY": KEY}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, env)
    try:
        with FakeLLMServer(latency_s=0.25, api_key=KEY) as llm, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            # every page renders on a home with a corpus and nothing else yet
            for name in PAGES:
                visit(page, base, name, shot=f"1-{name}-before")
            assert "sample" in visit(page, base, "dataset")  # the project picker

            # a heuristic run from the form, watched live until it is curated into v1
            start_from_form(page, base, max_chunks=30)
            page.get_by_text("Curated into dataset version v1").first.wait_for(timeout=120_000)
            text = page.inner_text("body")
            assert "succeeded" in text and "units" in text
            page.screenshot(path=str(SHOTS / "2-synthesis-heuristic-done.png"), full_page=True)

            # an API run: kill the dashboard mid-run, start it again, the run has gone on to its end
            start_from_form(page, base, max_chunks=40, generator="openai", base_url=llm.base_url, concurrency=2)
            page.wait_for_function("() => /[1-9][0-9]* of [0-9]+ units/.test(document.body.innerText)",
                                   timeout=60_000)
            page.screenshot(path=str(SHOTS / "3-synthesis-api-live.png"), full_page=True)
            served_at_kill = llm.stats()["requests"]
            kill(dashboard, signal.SIGKILL)
            dashboard = start_dashboard(home, port, env)
            page.goto(f"{base}/synthesis")
            settle(page)
            page.get_by_text("Curated into dataset version v2").first.wait_for(timeout=180_000)
            assert llm.stats()["requests"] > served_at_kill  # it kept going while no dashboard ran
            page.screenshot(path=str(SHOTS / "4-synthesis-api-done-after-restart.png"), full_page=True)

            # the results show everywhere, and the key is in no page
            for name in PAGES:
                text = visit(page, base, name, shot=f"5-{name}-after")
                if name == "dataset":
                    assert "Sample browser" in text
                    assert page.get_by_role("combobox", name="Dataset version").input_value() == "v2"
                if name == "synthesis":
                    assert "succeeded" in text
            browser.close()
    finally:
        kill(dashboard)
        run_cli("cluster", "stop", home=home)
