"""The dashboard in a real browser (Debian's chromium, driven by playwright), as a team uses it.

`doctune dashboard` is started as a user starts it, on a home with the sample repository ingested. The test
visits every page, starts a heuristic synthesis from the form and watches it to its dataset version, then
starts an API run (against the fake LLM server on 127.0.0.1), kills the dashboard's process mid-run, starts
the dashboard again and sees the same run finish: closing or refreshing a page never stops a run. With an
API key in the dashboard's environment, no page's HTML contains it. Screenshots go to
`test-artifacts/dashboard/` (git-ignored) for people to look at.
"""

from __future__ import annotations

import re
import signal

import pytest

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import PAGES, kill, run_of, settle, start_dashboard, wait_until
from tests.fake_llm import FakeLLMServer

KEY = "sk-dashboard-e2e-SECRET-4242"
SHOTS = REPO / "test-artifacts" / "dashboard"


def visit(page, base: str, name: str, shot: str | None = None) -> str:
    return browser.visit(page, base, name, secret=KEY, shot=SHOTS / f"{shot}.png" if shot else None)


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


def started_run(text: str) -> str:
    return re.search(r"Started (synth-\S+);", text).group(1)


def wait_curated(home, run_id: str) -> None:
    """Until the synthesis run has ended and its samples are curated into a dataset version (the client's view)."""
    run = wait_until(lambda: run_of(home, "sample", run_id),
                     lambda r: r["status"] not in {"queued", "running"} and r["summary"].get("dataset"),
                     f"{run_id} curated into a dataset version")
    assert run["status"] == "completed", run


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the waits are bounded each; a loaded machine is slow, not wrong
def test_dashboard_in_a_real_browser(cluster_home):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = cluster_home
    out = run_cli("ingest", str(SAMPLE_REPO), "--project", "sample", home=home)
    assert out.returncode == 0, out.stderr
    env = {"DOCTUNE_API_KEY": KEY}
    port = browser.free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, env)
    try:
        with FakeLLMServer(latency_s=0.25, api_key=KEY) as llm, browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 2400})
            # every page renders on a home with a corpus and nothing else yet
            for name in PAGES:
                visit(page, base, name, shot=f"1-{name}-before")
            assert "sample" in visit(page, base, "dataset")  # the project picker

            # a heuristic run from the form, watched until it is curated into v1: the wait is on the run's state
            # through the client (a loaded machine is slow, not wrong), then the page must say so
            run_id = started_run(start_from_form(page, base, max_chunks=30))
            wait_curated(home, run_id)
            page.get_by_text("Curated into dataset version v1").first.wait_for(timeout=60_000)
            text = page.inner_text("body")
            assert "completed" in text and "units" in text
            page.screenshot(path=str(SHOTS / "2-synthesis-heuristic-done.png"), full_page=True)

            # an API run: kill the dashboard mid-run, start it again, the run has gone on to its end
            api_run = started_run(start_from_form(page, base, max_chunks=40, generator="openai",
                                                  base_url=llm.base_url, concurrency=2))
            page.wait_for_function("() => /[1-9][0-9]* of [0-9]+ units/.test(document.body.innerText)",
                                   timeout=60_000)
            page.screenshot(path=str(SHOTS / "3-synthesis-api-live.png"), full_page=True)
            served_at_kill = llm.stats()["requests"]
            kill(dashboard, signal.SIGKILL)
            dashboard = start_dashboard(home, port, env)
            page.goto(f"{base}/synthesis")
            settle(page)
            wait_curated(home, api_run)
            page.get_by_text("Curated into dataset version v2").first.wait_for(timeout=60_000)
            assert llm.stats()["requests"] > served_at_kill  # it kept going while no dashboard ran
            page.screenshot(path=str(SHOTS / "4-synthesis-api-done-after-restart.png"), full_page=True)

            # the results show everywhere, and the key is in no page
            for name in PAGES:
                text = visit(page, base, name, shot=f"5-{name}-after")
                if name == "dataset":
                    assert "Sample browser" in text
                    assert page.get_by_role("combobox", name="Dataset version").input_value() == \
                        "v2 · synthesis of v1 (current)"  # the API run added its samples onto v1
                if name == "synthesis":
                    assert "completed" in text
            chromium.close()
    finally:
        kill(dashboard)
