"""`doctune demo` as a newcomer runs it: every stage on the bundled sample repository, then the dashboard with all
of it visible — the runs, the dataset, the training curves, the evaluation side by side."""

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from tests import dashboard_browser as browser


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_ends_on_a_dashboard_that_shows_everything(tmp_path, report):
    home, port = tmp_path / "home", browser.free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "DOCTUNE_API_KEY", "DEEPSEEK_API_KEY",
                                                            "OPENAI_API_KEY"}}
    log = tmp_path / "demo.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        demo = subprocess.Popen([str(Path(sys.executable).parent / "doctune"), "--home", str(home), "demo",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 1200  # ~7 min on a quiet 2-core machine: SmolLM2 trains and is evaluated
        while True:
            assert demo.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no dashboard within 20 minutes"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        seconds = time.monotonic() - started
        text = log.read_text()
        for stage in ("[1/4] ingest", "[2/4] synthesize", "[3/4] train", "[4/4] evaluate"):
            assert stage in text
        assert f"DocTune dashboard: http://127.0.0.1:{port}" in text
        assert "rouge_l" in text.lower() or "ROUGE" in text
        assert "preset smol" in text and "What the model learned: asked" in text
        for eval_set in ("test (", "probe (", "retention ("):
            assert eval_set in text
        assert "fact_accuracy" in text and "api_recall" in text
        with browser.browser_session() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport={"width": 1400, "height": 2400})
            base = f"http://127.0.0.1:{port}"
            overview = browser.visit(page, base, "overview")
            assert re.search(r"Runs listed\s+(\d+)", overview) and int(re.search(r"Runs listed\s+(\d+)",
                                                                                 overview).group(1)) >= 4
            assert "Sample browser" in browser.visit(page, base, "dataset")
            training = browser.visit(page, base, "training")
            assert "completed" in training and page.locator(".js-plotly-plot").count() >= 1
            evaluation = browser.visit(page, base, "evaluation")
            assert "Metrics" in evaluation and "Side by side" in evaluation and "Reference" in evaluation
            chromium.close()
    finally:
        browser.kill(demo)
        subprocess.run([str(Path(sys.executable).parent / "doctune"), "--home", str(home), "cluster", "stop"],
                       env=env, capture_output=True, timeout=60)
    report(demo_seconds_to_dashboard=round(seconds, 1))
