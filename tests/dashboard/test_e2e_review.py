"""Reviewing a dataset in a real browser (Debian's chromium, driven by playwright), as a team does it.

Two flows of issue 14: a multi-turn sample edited turn by turn on the Corpus & dataset page is in the export; and
a review saved on the page survives "Retry dead letters" on the Synthesis page: the retry's version is built on the
reviewed one and keeps its edit and its rejection. Runs are started by the `doctune` commands and watched through
the client API, all in this home's cluster (started first; the dashboard joins it), with generous bounds, never by
guessing how fast this machine is. Screenshots go to `test-artifacts/dashboard/review-*.png`.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from backend.config import SAMPLE_REPO
from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import client_answer, kill, settle, start_dashboard, wait_until
from tests.fake_llm import Faults, FakeLLMServer

SHOTS = REPO / "test-artifacts" / "dashboard"


def cli_json(home, *args: str):
    out = run_cli(*args, "--json", home=home)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def versions(home) -> dict[str, dict]:
    return {d["version"]: d for d in client_answer(home, "datasets", "s")}


def exported(home, out_dir) -> tuple[str, list[dict]]:
    """The current version exported as OpenAI messages: (all the text, the provenance rows)."""
    res = run_cli("export", "--project", "s", "--format", "openai", "--out", str(out_dir), home=home)
    assert res.returncode == 0, res.stderr
    text = "".join(p.read_text() for p in out_dir.glob("*.jsonl") if "provenance" not in p.name)
    prov = [json.loads(line) for p in out_dir.glob("*.provenance.jsonl") for line in p.read_text().splitlines()]
    return text, prov


@contextmanager
def dashboard_page(home):
    """The dashboard on this home's cluster (the `cluster_home` fixture's) and a chromium page; both stopped
    afterwards."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = browser.free_port()
    dashboard = start_dashboard(home, port, {})
    try:
        with browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 2400})
            yield page, f"http://127.0.0.1:{port}"
            chromium.close()
    finally:
        kill(dashboard)


def open_dataset(page, base: str, *, task: str | None = None) -> str:
    browser.visit(page, base, "dataset")
    if task:
        page.get_by_role("combobox", name="Task").click()
        page.get_by_role("option", name=task, exact=True).click()
        settle(page)
    return page.inner_text("body")


def conversation(page, n: int):
    """The n-th multi-turn sample's expander on the page (opened), and its sample id."""
    expander = page.get_by_test_id("stExpander").filter(has_text="Conversation").nth(n)
    summary = expander.locator("summary")
    sid = re.search(r"Conversation (\w+)", summary.inner_text()).group(1)
    summary.click()
    return expander, sid


def edit_turn(page, expander, label: str, text: str) -> None:
    box = expander.get_by_label(label)
    box.fill(text)
    box.press("Control+Enter")  # a text area commits on Ctrl+Enter (or on leaving it)
    settle(page)


def shows_save(page, button: str, redo=None) -> None:
    """Wait until the save button counts what the test did; an interaction lost to a rerun of the page (a click
    landing while Streamlit redraws) is done once more, then a miss names the button the page shows."""
    for attempt in range(2):
        try:
            page.get_by_role("button", name=button).wait_for(timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 0 and redo is not None:
                redo()
                settle(page)
    shown = page.get_by_role("button", name=re.compile("^Save as a new version")).all_inner_texts()
    raise AssertionError(f"expected {button!r}, the page shows {shown}")


def save_review(page, button: str, note: str) -> None:
    shows_save(page, button)
    page.get_by_label("Review note").fill(note)
    page.get_by_label("Review note").press("Enter")
    settle(page)
    page.get_by_role("button", name=button).click()
    settle(page)


@pytest.mark.slow
def test_edit_a_multi_turn_sample_and_find_the_edit_in_the_export(tmp_path, cluster_home):
    home = cluster_home
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    assert run_cli("synth", "--project", "s", "--max-chunks", "30", home=home).returncode == 0  # heuristic: v1
    edit = "EDITED IN THE BROWSER: pass the manifest path, then call load()."
    with dashboard_page(home) as (page, base):
        open_dataset(page, base, task="multiturn")
        page.screenshot(path=str(SHOTS / "review-1-multiturn-before.png"), full_page=True)
        expander, sid = conversation(page, 0)
        assert [expander.get_by_label(f"Turn {i} · {role}").count() for i, role in
                enumerate(("user", "assistant", "user", "assistant"), start=1)] == [1, 1, 1, 1]
        edit_turn(page, expander, "Turn 4 · assistant", edit)
        save_review(page, "Save as a new version (1 edited, 0 rejected)", "a multi-turn fix")
        page.get_by_text("Saved as v2; v1 is unchanged.").wait_for(timeout=60_000)
        assert "Lineage: v2 review (a multi-turn fix) ← v1 synthesis" in page.inner_text("body")
        page.screenshot(path=str(SHOTS / "review-2-multiturn-saved.png"), full_page=True)

    listed = versions(home)
    assert (listed["v2"]["parent"], listed["v2"]["operation"], listed["v2"]["current"]) == ("v1", "review", True)
    text, prov = exported(home, tmp_path / "export")  # the current version by default: v2
    assert edit in text
    lines = {p["sample_id"]: i for i, p in enumerate(prov)}
    assert sid in lines


@pytest.mark.slow
def test_review_then_retry_dead_letters_keeps_the_review(tmp_path, cluster_home):
    home = cluster_home
    assert run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home).returncode == 0
    edit = "REVIEWED BEFORE THE RETRY: the answer a reviewer wrote."
    with FakeLLMServer(latency_s=0.01, faults=Faults(p_500=0.3)) as llm:
        cfg = tmp_path / "synth.yaml"
        cfg.write_text(f"generator: openai\nbase_url: {llm.base_url}\nmodel: fake-model\nmax_chunks: 30\n"
                       "max_attempts: 1\nrequest_timeout_s: 5\nbackoff_base_s: 0.05\nbackoff_max_s: 0.2\n")
        first = cli_json(home, "synth", "--project", "s", "--config", str(cfg))
        assert first["dead_letters"] > 0 and first["dataset"] == "v1", first
        with dashboard_page(home) as (page, base):
            open_dataset(page, base, task="multiturn")
            edited_box, edited = conversation(page, 0)
            edit_turn(page, edited_box, "Turn 2 · assistant", edit)
            shows_save(page, "Save as a new version (1 edited, 0 rejected)",
                       redo=lambda: edit_turn(page, edited_box, "Turn 2 · assistant", edit))
            rejected_box, rejected = conversation(page, 1)
            reject = rejected_box.get_by_text("Reject this sample")
            reject.click()
            settle(page)
            shows_save(page, "Save as a new version (1 edited, 1 rejected)",
                       redo=lambda: None if rejected_box.get_by_role("checkbox").is_checked() else reject.click())
            save_review(page, "Save as a new version (1 edited, 1 rejected)", "kept through the retry")
            page.get_by_text("Saved as v2; v1 is unchanged.").wait_for(timeout=60_000)
            page.screenshot(path=str(SHOTS / "review-3-reviewed.png"), full_page=True)

            llm.set_faults(Faults())  # the endpoint recovered: the dead letters will succeed
            browser.visit(page, base, "synthesis")
            page.get_by_role("button", name="Retry dead letters").click()
            settle(page)
            listed = wait_until(lambda: versions(home), lambda v: "v3" in v, "the retry's version v3", timeout_s=300)
            page.screenshot(path=str(SHOTS / "review-4-retried.png"), full_page=True)

            text = open_dataset(page, base)
            assert "Lineage: v3 retry ← v2 review (kept through the retry) ← v1 synthesis" in text
            assert page.get_by_role("combobox", name="Dataset version").input_value() == "v3 · retry of v2 (current)"
            page.screenshot(path=str(SHOTS / "review-5-dataset-after-retry.png"), full_page=True)
            browser.visit(page, base, "training", shot=SHOTS / "review-6-training-defaults-to-current.png")
            assert page.get_by_role("combobox", name="Dataset version").input_value() == "v3 · retry of v2 (current)"

            # the version from before the review is still there, and says what it leaves out
            open_dataset(page, base)
            page.get_by_role("combobox", name="Dataset version").click()
            page.get_by_role("option", name=re.compile(r"^v1 ")).click()
            settle(page)
            assert "v1 leaves out review v2 (kept through the retry)" in page.inner_text("body")
            page.screenshot(path=str(SHOTS / "review-7-old-version-warns.png"), full_page=True)

    assert (listed["v3"]["parent"], listed["v3"]["operation"], listed["v3"]["current"]) == ("v2", "retry", True)
    assert listed["v3"]["samples"] > listed["v2"]["samples"]  # the retried units' samples joined the reviewed ones
    assert listed["v3"]["stats"]["review_carried"] == {"edited": 1, "rejected": 1}
    text, prov = exported(home, tmp_path / "export")
    assert edit in text
    ids = {p["sample_id"] for p in prov}
    assert edited in ids and rejected not in ids
