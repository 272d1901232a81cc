"""Pages that tell the truth, in a real browser (Debian's chromium, driven by playwright).

A synthesis against the fake LLM server answering 45% of requests with HTTP 500 shows those 500s counted (not
"Failed 0"), says its model has no price and no budget can apply, and offers no requests/min once it ended. An
evaluation of the `tiny` model (random weights) shows the degenerate-output banner and says the base is random.
Each test's home has its own cluster, started first (every command and the dashboard join it), and waits on the run's
state through the client API (`client_answer`, a process that joins that cluster) with a generous bound, never on a
guess of how fast this machine is. Screenshots go to `test-artifacts/dashboard/`.
"""

from __future__ import annotations

import json
import re

import pytest

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import client_answer, settle, start_dashboard, wait_until
from tests.fake_llm import Faults, FakeLLMServer

SHOTS = REPO / "test-artifacts" / "dashboard"


def ok(out):
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def wait_for_run(home, kind: str, timeout_s: float = 600) -> dict:
    """The newest run of `kind` once it has ended (a synthesis: once curated), read through the client API."""
    def ended(runs: list[dict]) -> bool:
        return bool(runs) and runs[0]["status"] not in {"queued", "running"} and (
            kind != "synth" or bool(runs[0]["summary"].get("dataset")))

    return wait_until(lambda: [r for r in client_answer(home, "runs", "sample") if r["kind"] == kind], ended,
                      f"a {kind} run ended", timeout_s)[0]


def tiles(page) -> dict[str, str]:
    """Every st.metric on the page: label → value."""
    out = {}
    for m in page.locator('[data-testid="stMetric"]').all():
        label = m.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        out[label] = m.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out


@pytest.mark.slow
def test_a_synthesis_with_500s_shows_them_counted(cluster_home):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = cluster_home
    ok(run_cli("ingest", str(SAMPLE_REPO), "--project", "sample", home=home))
    port = browser.free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, {})
    try:
        with FakeLLMServer(latency_s=0.02, faults=Faults(p_500=0.45)) as llm, browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"{base}/synthesis")
            settle(page)
            assert page.get_by_role("textbox", name="Base URL (openai)").is_disabled()  # offline: no endpoint
            page.get_by_role("combobox", name="Generator").click()
            page.get_by_role("option", name="openai").click()
            settle(page)
            page.get_by_label("Base URL (openai)").fill(llm.base_url)
            page.get_by_label("Model (openai)").fill("fake-model")  # no price: the cost is unknown
            page.get_by_label("Max chunks (0: all)").fill("20")
            page.get_by_label("Concurrency").fill("4")
            page.get_by_role("button", name="Estimate cost").click()
            page.get_by_role("button", name="Start synthesis").wait_for(timeout=120_000)
            assert "No price for model fake-model" in page.inner_text("body")
            page.get_by_role("button", name="Start synthesis").click()
            page.get_by_text("it goes on if you leave this page").wait_for(timeout=120_000)

            run = wait_for_run(home, "synth")
            assert run["status"] == "completed"
            served = llm.stats()
            page.goto(f"{base}/synthesis?project=sample&run={run['run_id']}")
            settle(page)
            page.get_by_text("Failed attempts by class").wait_for(timeout=60_000)
            text = page.inner_text("body")
            page.screenshot(path=str(SHOTS / "truth-synthesis-500s.png"), full_page=True)
            shown = tiles(page)
            fives = served["http_500"]
            assert fives > 0 and shown["Failed requests"] == str(fives)  # every 500 the server sent, counted
            assert shown["Requests"] == str(served["requests"])
            assert f"5xx {fives} (of {served['requests']} requests)" in text
            assert shown["Cost"] == "n/a" and "a budget cannot apply" in text
            assert "Requests / min" not in shown  # an ended run sends nothing
            chromium.close()
    finally:
        browser.kill(dashboard)


@pytest.mark.slow
def test_the_evaluation_page_shows_the_degenerate_output_banner_for_tiny(cluster_home):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = cluster_home
    ok(run_cli("ingest", str(SAMPLE_REPO), "--project", "sample", home=home))
    ok(run_cli("synth", "--project", "sample", "--max-chunks", "40", home=home, timeout=300))
    ok(run_cli("train", "--project", "sample", "--preset", "tiny", "--max-steps", "10", home=home, timeout=600))
    train_run = next(r for r in json.loads(ok(run_cli("runs", "--json", home=home)).stdout) if r["kind"] == "train")
    assert train_run["status"] == "completed"
    ok(run_cli("eval", "--run", train_run["id"], "--limit", "8", "--max-new-tokens", "24", home=home,
               timeout=600))
    port = browser.free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, {})
    try:
        with browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"{base}/evaluation")
            settle(page)
            page.get_by_text("Degenerate outputs dominate").wait_for(timeout=60_000)
            assert browser.errors_on(page) == []  # a warning, not an error: the page itself works
            text = page.inner_text("body")
            page.screenshot(path=str(SHOTS / "truth-evaluation-tiny.png"), full_page=True)
            assert "The base model tiny has random weights" in text
            shown = {k: v for k, v in tiles(page).items() if k.startswith("Degenerate outputs")}
            assert shown and all(re.fullmatch(r"[1-8] of 8", v) for v in shown.values())  # counted per side
            assert "Judge skipped: no judge endpoint configured" in text
            assert "degenerate:" in text  # each row's degenerate side is marked
            page.get_by_text("What base, tuned and each set mean").click()
            assert "the adapter switched off" in page.inner_text("body")
            chromium.close()
    finally:
        browser.kill(dashboard)
