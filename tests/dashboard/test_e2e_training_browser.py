"""The loop after a dataset version, closed in a real browser (chromium, driven by playwright).

From the Training page: start a `tiny` run from the form and see its step go by live, cancel it and resume it,
then, on Compare runs, see its tokens-seen count go on from the resume (never fold back); then, from the finished
run's next steps, start an evaluation judged by the fake LLM server and see it complete, export its dataset
version and download the zip, and merge the adapter. Every wait is on the run's state through the client API
(generous bounds), then the page is checked. Screenshots go to `test-artifacts/dashboard/`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import client_answer, kill, run_of, settle, start_dashboard, wait_until
from tests.fake_llm import FakeLLMServer

KEY = "sk-dashboard-training-SECRET-1717"
SHOTS = REPO / "test-artifacts" / "dashboard"
MAX_STEPS = 60
ACTIVE = {"queued", "running"}


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"training-{name}.png"), full_page=True)


def open_page(page, base: str, name: str) -> str:
    return browser.visit(page, base, name, secret=KEY)


def start_tiny_run(page, base: str) -> str:
    """The Training form with the `tiny` preset (random weights: plumbing, fast on a CPU); returns the run id."""
    open_page(page, base, "training")
    page.get_by_role("combobox", name="Preset").click()
    page.get_by_role("option", name="tiny", exact=True).click()
    settle(page)
    page.get_by_label("Max steps (-1: epochs decide)").fill(str(MAX_STEPS))
    page.get_by_label("Checkpoint every N steps").fill("5")
    page.get_by_label("Eval every N steps").fill("10")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("it goes on if you leave this page").first.wait_for(timeout=90_000)
    return re.search(r"Queued (train-\S+) on", page.inner_text("body")).group(1)


def run_to_its_end(page, home, button: str, kind: str) -> dict:
    """Click a next step's `button`, then wait on the `kind` run it started (through the client) until it ends;
    returns that run, completed."""
    page.get_by_role("button", name=button, exact=True).click()
    page.get_by_text(f"Started {kind}-").wait_for(timeout=90_000)
    run_id = re.search(rf"Started ({kind}-\S+);", page.inner_text("body")).group(1)
    run = wait_until(lambda: run_of(home, "sample", run_id), lambda r: r["status"] not in ACTIVE,
                     f"the {kind} run {run_id} ended")
    assert run["status"] == "completed", run
    return run


def plotted(page) -> list[dict]:
    """The traces of every Plotly chart on the page as the browser drew them (`_fullData`: the arrays decoded),
    each with its metric (the facet Plotly Express names in the hover template)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
        p => (p._fullData || []).map(t => ({run: t.name, hover: String(t.hovertemplate || ''),
                                             x: Array.from(t.x || []), y: Array.from(t.y || [])})))""")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the waits are bounded each; a loaded machine is slow, not wrong
def test_train_watch_resume_compare_then_evaluate_export_merge_in_a_browser(tmp_path, cluster_home):
    SHOTS.mkdir(parents=True, exist_ok=True)
    home = cluster_home
    for args in (("ingest", str(SAMPLE_REPO), "--project", "sample"),
                 ("synth", "--project", "sample", "--max-chunks", "30")):
        out = run_cli(*args, home=home, timeout=600)
        assert out.returncode == 0, out.stderr
    port = browser.free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(home, port, {"DOCTUNE_API_KEY": KEY})
    try:
        with FakeLLMServer(api_key=KEY) as llm, browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 4200})
            open_page(page, base, "training")
            shot(page, "1-before")

            # a live run shows its step of N, with the status the queue shows
            run_id = start_tiny_run(page, base)
            wait_until(lambda: client_answer(home, "train_progress", run_id),
                       lambda p: p["status"] == "running" and (p["step"] or 0) >= 3, "the run reached step 3")
            page.wait_for_function(f"() => /Step [1-9][0-9]* of {MAX_STEPS}/.test(document.body.innerText)",
                                   timeout=60_000)  # the panel refreshes every 2 s
            text = page.inner_text("body")
            assert f"{run_id} — running" in text and "Tokens / s" in text
            assert re.search(r"about \d+:\d\d left", text), "no time left shown"
            shot(page, "2-live")

            # cancel from the page (a checkpoint first), then resume from the page
            page.get_by_role("button", name="Cancel (checkpoint first)").click()
            stopped = wait_until(lambda: run_of(home, "sample", run_id), lambda r: r["status"] not in ACTIVE,
                                 "the run stopped after the cancel")
            assert stopped["status"] == "cancelled", stopped
            open_page(page, base, "training")
            page.get_by_role("button", name="Resume").click()
            done = wait_until(lambda: run_of(home, "sample", run_id),
                              lambda r: r["status"] not in ACTIVE and r["summary"].get("global_step") == MAX_STEPS,
                              "the resumed run completed")
            assert done["status"] == "completed", done
            text = open_page(page, base, "training")
            assert f"Step {MAX_STEPS} of {MAX_STEPS}" in text and f"{run_id} — completed" in text
            assert "Next steps" in text and f"doctune eval --run {run_id}" in text
            shot(page, "3-completed")

            # Compare: tokens seen against step rises across the resume
            open_page(page, base, "compare")
            metrics = page.get_by_role("combobox", name="Metrics")
            metrics.click()
            metrics.fill("num_tokens")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            settle(page)
            tokens = [t for t in plotted(page) if t["run"] == run_id and "name=num_tokens" in t["hover"]]
            assert len(tokens) == 1 and tokens[0]["y"], plotted(page)
            for t in tokens:
                steps, seen = t["x"], t["y"]
                assert steps == sorted(steps) and steps[-1] == MAX_STEPS
                assert all(b >= a for a, b in zip(seen, seen[1:])), f"tokens seen fold back: {seen}"
            page.screenshot(path=str(SHOTS / "compare-tokens-seen-after-resume.png"), full_page=True)

            # next steps: evaluate (judged by the fake server), from the page, to completion
            open_page(page, base, "training")
            page.get_by_label("Prompts per set (0: all)").fill("2")
            page.get_by_label("Max new tokens").fill("8")
            page.get_by_label("Judge base URL").fill(llm.base_url)
            page.get_by_label("Judge model").fill("fake-model")
            eval_id = run_to_its_end(page, home, "Evaluate", "eval")["run_id"]
            assert llm.stats()["pairwise"] > 0, llm.stats()  # the judge was asked
            text = open_page(page, base, "training")
            assert re.search(rf"{eval_id} evaluation, completed, .* — ROUGE-L tuned \d\.\d{{3}}", text), text
            assert "judge win rate" in text
            shot(page, "4-evaluated")

            # export the dataset version and download it as a zip
            page.get_by_role("tab", name="Export & download").click()
            page.get_by_role("button", name="Export v1 as alpaca").click()
            with page.expect_download(timeout=90_000) as download:
                page.get_by_role("button", name=re.compile(r"Download sample_v1_alpaca\.zip")).click()
            archive = tmp_path / "download.zip"
            download.value.save_as(archive)
            names = zipfile.ZipFile(archive).namelist()
            assert "sample_v1_alpaca/manifest.json" in names and "sample_v1_alpaca/dataset_info.json" in names

            # merge the adapter, in a run of its own
            page.get_by_role("tab", name="Merge").click()
            page.get_by_role("radiogroup", name="Precision").get_by_text("fp32", exact=True).click()
            merged = run_to_its_end(page, home, "Merge", "merge")
            merge_id = merged["run_id"]
            assert (Path(merged["summary"]["merged"]) / "config.json").exists()
            text = open_page(page, base, "training")
            assert f"{merge_id} merge, completed" in text
            shot(page, "5-merged")
            chromium.close()
    finally:
        kill(dashboard)
