"""With an API key set, the whole pipeline runs — synthesis, judged curation, export, training, a judged
evaluation, the dashboard — and the key is then searched for in the database, logs, exports, run folders,
Ray's logs, every command's output and every dashboard page's HTML: it is in none of them."""

import json
from pathlib import Path

import pytest

from actors.runtime import ray_temp_dir
from backend.config import SAMPLE_REPO
from conftest import run_cli
from tests import dashboard_browser as browser
from tests.fake_llm import FakeLLMServer

KEY = "sk-doctune-secret-SECRET-9876"


def ok(out) -> str:
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_the_key_is_nowhere(tmp_path, report):
    home, exports = tmp_path / "h", tmp_path / "exp"
    env = {"DOCTUNE_API_KEY": KEY}
    outputs: list[str] = []
    assert run_cli("cluster", "start", home=home).returncode == 0  # every command below joins this cluster
    try:
        with FakeLLMServer(api_key=KEY) as server:
            endpoint = ["--base-url", server.base_url, "--model", "fake-model"]
            outputs.append(ok(run_cli("ingest", str(SAMPLE_REPO), "--project", "s", home=home, env=env)))
            outputs.append(ok(run_cli("synth", "--project", "s", "--generator", "openai", *endpoint,
                                      "--max-chunks", "12", home=home, env=env)))
            cfg = tmp_path / "judge.yaml"
            cfg.write_text(f"synth:\n  generator: openai\n  base_url: {server.base_url}\n  model: fake-model\n")
            outputs.append(ok(run_cli("curate", "--project", "s", "--judge", "--config", str(cfg), home=home,
                                      env=env)))
            for fmt in ("alpaca", "sharegpt", "openai", "parquet"):
                outputs.append(ok(run_cli("export", "--project", "s", "--format", fmt, "--out",
                                          str(exports / fmt), home=home, env=env)))
            out = run_cli("train", "--project", "s", "--preset", "tiny", "--max-steps", "4", "--json", home=home,
                          env=env)
            outputs.append(ok(out))
            trained = json.loads(out.stdout)
            assert trained["status"] == "completed"
            outputs.append(ok(run_cli("eval", "--run", trained["run_id"], "--judge", *endpoint, "--limit", "4",
                                      "--max-new-tokens", "8", home=home, env=env)))
            requests = server.request_log
            assert requests and all(r["authorization"] == f"Bearer {KEY}" for r in requests)

            port = browser.free_port()
            dashboard = browser.start_dashboard(home, port, env)
            pages = 0
            try:
                with browser.browser_session() as p:
                    chromium = browser.launch(p)
                    page = chromium.new_page(viewport={"width": 1400, "height": 2000})
                    for name in browser.PAGES:
                        browser.visit(page, f"http://127.0.0.1:{port}", name, secret=KEY)
                        pages += 1
                    chromium.close()
            finally:
                browser.kill(dashboard)
    finally:
        run_cli("cluster", "stop", home=home)  # the store actor closes the database: it is all on disk

    for text in outputs:
        assert KEY not in text
    files = bytes_searched = 0
    ray_sessions = list(Path(ray_temp_dir(home)).glob("session_2*"))  # the home's own temp folder, not /tmp/ray
    assert ray_sessions
    for root in (home, exports, *(s for s in ray_sessions if home not in s.parents)):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink() and not f.is_socket():
                data = f.read_bytes()
                files, bytes_searched = files + 1, bytes_searched + len(data)
                assert KEY.encode() not in data, f"key found in {f}"
    assert (home / "doctune.duckdb").exists() and any((home / "runs").rglob("adapter_model.safetensors"))
    report(api_requests_with_key=len(requests), commands=len(outputs) + 1, dashboard_pages=pages,
           files_searched=files, mb_searched=round(bytes_searched / 2**20, 1), key_found=0)
