"""The Playground in a real browser (Debian's chromium, driven by playwright): `doctune serve` runs in this home's
cluster (the tiny base and an adapter with random weights), the dashboard joins it, a prompt is asked, and both
answers appear side by side, each what the endpoint answers any OpenAI client. Screenshot:
`test-artifacts/dashboard/playground.png`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from tests import dashboard_browser as browser
from tests.dashboard_browser import free_port, settle, start_dashboard

SHOTS = REPO / "test-artifacts" / "dashboard"
PROMPT = "How do I install tidemark?"

# joins the home's cluster: a training run holding a random adapter, then the endpoint for it (detached, it
# outlives this process), and what the endpoint answers PROMPT for base and tuned
SETUP = """
import json, sys
from pathlib import Path
from openai import OpenAI
from actors.client import DocTune
from backend.base_models import resolve_model_path
from tests.tiny_adapters import random_adapter, trained_run
home, port, prompt = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dt = DocTune(home)
dt.store.upsert_project("s", str(home), None)
trained_run(dt.store, "train-play", random_adapter(resolve_model_path("tiny", home=home), 5, home / "adapter"))
served = dt.serve(["train-play"], port=port)
api = OpenAI(base_url=served["url"], api_key="none", max_retries=0)
answers = {m: api.chat.completions.create(model=m, messages=[{"role": "user", "content": prompt}], max_tokens=32,
                                          temperature=0).choices[0].message.content for m in ("base", "train-play")}
print(json.dumps({"url": served["url"], "answers": answers}))
"""


@pytest.mark.slow
def test_playground_asks_base_and_tuned_side_by_side(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert run_cli("cluster", "start", home=home).returncode == 0
    dashboard = None
    try:
        out = subprocess.run([sys.executable, "-c", SETUP, str(home), str(free_port()), PROMPT], capture_output=True,
                             text=True, timeout=600, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
        served = json.loads(out.stdout.strip().splitlines()[-1])
        port = free_port()
        dashboard = start_dashboard(home, port, {})
        with browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/playground")
            settle(page)
            assert served["url"] in page.inner_text("body")
            page.get_by_label("Prompt").fill(PROMPT)
            page.get_by_role("button", name="Ask").click()  # the click also hands the text area's value over
            page.get_by_text("Tuned (train-play)").wait_for(timeout=300_000)
            settle(page)
            text = page.inner_text("body")
            assert browser.errors_on(page) == []
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "playground.png"), full_page=True)
            chromium.close()
        # the page renders answers as Markdown (`#` becomes a heading): its words are compared, in order
        words = re.findall(r"[A-Za-z]\w+", served["answers"]["train-play"])
        assert "Base" in text and words and " ".join(words[:4]) in " ".join(re.findall(r"[A-Za-z]\w+", text))
    finally:
        if dashboard is not None:
            browser.kill(dashboard)
        run_cli("serve", "--stop", home=home)
        run_cli("cluster", "stop", home=home)
