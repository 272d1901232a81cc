"""A continued adapter in a real browser (Debian's chromium, driven by playwright): the Training page names the run
whose adapter it continued, the Evaluation page shows both adapters on the changed and the unchanged files.
Screenshots go to `test-artifacts/dashboard/`."""

from __future__ import annotations

import pytest

from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import settle, start_dashboard
from tests.seed_store import PROJECT, TRAIN_RUNS, seed_continued_run, seed_store

SHOTS = REPO / "test-artifacts" / "dashboard"


@pytest.mark.slow
def test_a_continued_adapter_and_its_comparison_in_a_real_browser(tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    seed_store(home, samples=60)
    seed_continued_run(home)
    port = browser.free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, {})
    try:
        with browser.browser_session() as p:
            page = browser.launch(p).new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"{base}/training?project={PROJECT}&run=train-continued")
            settle(page)
            page.get_by_text(f"Continues run {TRAIN_RUNS[0]}'s adapter").wait_for(timeout=60_000)
            assert browser.errors_on(page) == []
            page.screenshot(path=str(SHOTS / "continued-training.png"), full_page=True)

            page.goto(f"{base}/evaluation?project={PROJECT}")
            settle(page)
            page.get_by_text("Against the previous adapter").wait_for(timeout=60_000)
            text = page.inner_text("body")
            assert "Changed files: did it learn the change?" in text and "did it keep the rest?" in text
            assert "1 files added, 2 changed, 1 deleted, 7 unchanged" in text
            assert browser.errors_on(page) == []
            page.get_by_text("Against the previous adapter").scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "continued-evaluation.png"), full_page=True)
    finally:
        browser.kill(dashboard)
        run_cli("cluster", "stop", home=home)
