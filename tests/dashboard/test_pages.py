"""Every dashboard page, run in-process with Streamlit's AppTest on a seeded store and on empty ones.

The pages make their DocTune client in this process (it joins the session's Ray). `dashboard.common` caches one
client per home for the whole process, so each test has its own home, and the `dash` fixture shuts that home's
store actor down afterwards. The seed (`tests/seed_store.py`) is written before any client opens the home.
"""

from __future__ import annotations

import colorsys
import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.auth_config import AUTH_VARIABLE, PASSWORD_VARIABLE
from backend.config import DB_FILENAME
from backend.store import Store
from tests.seed_store import EVAL_RUN, PROJECT, SYNTH_RUN, TRAIN_RUNS, seed_continued_run, seed_store

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PAGES = ("overview", "dataset", "synthesis", "training", "compare", "evaluation")
TIMEOUT = 60  # seconds per script run; a run takes well under one here


@pytest.fixture
def dash(ray_session, home, monkeypatch):
    """The dashboard's environment pointed at `home`, with no gate; its store actor is closed afterwards."""
    monkeypatch.setenv("DOCTUNE_HOME", str(home))
    for name in ("RAY_ADDRESS", PASSWORD_VARIABLE, AUTH_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    yield home
    from dashboard.common import _client, client

    client().store.shutdown()
    _client.clear()  # the cached client's actor is gone; no later test may be handed it


@pytest.fixture
def seeded(dash) -> dict:
    return seed_store(dash)


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    return clean(at)


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def metrics(at: AppTest) -> dict[str, str]:
    """Label -> value; where two metrics share a label, the first on the page."""
    found: dict[str, str] = {}
    for m in at.metric:
        found.setdefault(m.label, m.value)
    return found


def table(at: AppTest, column: str):
    """The one dataframe on the page with this column."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a column {column!r}"
    return found[0]


def labels(widgets) -> list[str]:
    return [w.label for w in widgets]


# ---- every page on a seeded store ------------------------------------------------------------------------------

def check_overview(at: AppTest) -> None:
    assert titles(at) == ["Overview"]
    projects = table(at, "root")
    assert projects.set_index("project").loc[PROJECT, ["latest version", "its samples"]].tolist() == ["v1", 400]
    runs = table(at, "kind")
    assert set(runs["run"]) == {SYNTH_RUN, *TRAIN_RUNS, EVAL_RUN}
    assert set(runs["project"]) == {PROJECT}
    by_run = runs.set_index("run")
    assert by_run.loc[EVAL_RUN, "summary"] == "ROUGE-L Δ +0.200"
    assert by_run.loc[EVAL_RUN, "open"] == f"/evaluation?project={PROJECT}&run={EVAL_RUN}"  # each row opens its run
    assert by_run.loc[SYNTH_RUN, "open"] == f"/synthesis?project={PROJECT}&run={SYNTH_RUN}"
    assert metrics(at) == {"Live runs": "0", "Runs listed": "4", "Failed or interrupted": "0"}
    assert not at.info
    details = table(at, "item").set_index("item")["value"]  # the newest run's whole summary, as a table
    assert details["adapter run"] == TRAIN_RUNS[0] and details["test › metrics › rouge l › delta"] == "0.2"


def check_dataset(at: AppTest) -> None:
    m = metrics(at)
    assert m["Samples"] == "400" and m["Test samples"] == "40"
    assert (m["Files read"], m["Skipped"], m["Chunks"], m["Dead letters"]) == ("36", "4", "120", "1")
    assert set(table(at, "skip_reason")["skip_reason"]) == {"binary"}
    assert "Sample browser" in [s.value for s in at.subheader]
    assert labels(at.number_input) == ["Page (of 16; 400 matches)"]
    editor = at.data_editor
    assert len(editor) == 1 and editor[0].key == "editor-v1-1---"
    rows = editor[0].value
    assert len(rows) == 25 and not rows["reject"].any()
    assert rows["instruction"].str.match(r"How do I call fn_\d+ in tidemark\?").all()
    assert labels(at.button) == ["Save as a new version (0 edited, 0 rejected)"] and at.button[0].disabled


def check_synthesis(at: AppTest) -> None:
    assert at.button(key="FormSubmitter:synth-form-Estimate cost").label == "Estimate cost"
    assert at.selectbox[0].label == "Generator" and at.selectbox[0].value == "heuristic"
    assert "Start synthesis" not in labels(at.button)  # only after an estimate
    assert next(s for s in at.selectbox if s.label == "Run").value == SYNTH_RUN
    assert "Dead letters (1)" in [s.value for s in at.subheader]
    dead = table(at, "reason")
    assert dead[["task", "reason", "detail", "attempts"]].values.tolist() == [
        ["qa", "unparseable", "the reply was not JSON", 5]]
    assert dead["what it means"][0].startswith("an answer arrived (and was paid for) but held no usable samples")
    assert dead["file"][0] == f"chunk {'0' * 32}"  # a chunk re-ingested away: its id, not a blank
    assert at.button(key=f"retry-{SYNTH_RUN}").label == "Retry dead letters"
    shown = metrics(at)
    assert shown["429s"] == "10" and shown["Requests"] == "200" and shown["Failed requests"] == "0"
    assert shown["Dead letters"] == "1" and "Requests / min" not in shown  # an ended run sends none
    assert any("asks again for these 1 units (unparseable 1)" in m.value for m in at.markdown)


def check_training(at: AppTest) -> None:
    assert at.button(key="FormSubmitter:train-form-smol-Start training").label == "Start training"
    picked = {s.label: s.value for s in at.selectbox}
    assert picked["Preset"] == "smol" and picked["Dataset version"] == "v1"  # the real model, on a CPU
    assert at.number_input(key="smol-lora-r").value == 16
    run = next(s for s in at.selectbox if s.label == "Run")
    assert sorted(run.options) == [f"{r} (completed)" for r in TRAIN_RUNS]
    assert metrics(at)["Step"] == "50"
    assert len(at.get("plotly_chart")) >= 2  # training curves and resources (rss_mb)
    assert "Nothing queued or running." in [c.value for c in at.caption]


def check_compare(at: AppTest) -> None:
    assert at.multiselect[0].label == "Runs" and sorted(at.multiselect[0].value) == sorted(TRAIN_RUNS)
    summary = table(at, "ROUGE-L tuned").set_index("run")
    assert sorted(summary.index) == sorted(TRAIN_RUNS)
    assert summary.loc[TRAIN_RUNS[0], "ROUGE-L tuned"] == "0.400"  # the evaluated one, rounded
    assert summary.loc[TRAIN_RUNS[0], "judge win rate"] == "0.50"
    assert summary.loc[TRAIN_RUNS[1], "ROUGE-L tuned"] == "–" and summary.loc[TRAIN_RUNS[1], "peak GPU MB"] == "–"
    assert re.fullmatch(r"\d+\.\d{4}", summary.loc[TRAIN_RUNS[1], "best train loss"])
    assert summary["steps"].tolist() == [50, 50]
    diff = table(at, "setting")
    assert set(diff["setting"]) == {"train.lora.r", "train.training.learning_rate"}
    assert at.get("plotly_chart"), "no overlay of the curves"
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    colours = {t["name"]: t["line"]["color"] for t in traces}
    assert sorted(colours) == sorted(TRAIN_RUNS), colours
    hues = [colorsys.rgb_to_hsv(*bytes.fromhex(c.lstrip("#")))[0] for c in colours.values()]
    apart = abs(hues[0] - hues[1])
    assert min(apart, 1 - apart) > 0.1, colours  # two hues, not two shades of one blue


def check_evaluation(at: AppTest) -> None:
    assert at.selectbox[0].value == EVAL_RUN
    scores = table(at, "metric").set_index("metric")
    assert sorted(scores.index) == ["exact_match", "rouge_l"]
    assert scores.loc["rouge_l", ["base", "tuned", "Δ (tuned − base)"]].tolist() == pytest.approx([0.2, 0.4, 0.2])
    captions = [c.value for c in at.caption]
    assert "ROUGE-L flips (moved by more than 0.05): 8 improved, 4 regressed, of 12" in captions
    assert any(c.startswith("Judge ran: win rate 0.50") for c in captions)
    assert labels(at.number_input) == ["Page (of 2; 12 rows)"]
    assert len(side_by_side_rows(at)) == 10
    assert [e.label for e in at.expander][0] == "What base, tuned and each set mean"
    glossary = next(m.value for m in at.markdown if m.value.startswith("- **base**"))
    assert all(f"- **{w}**" in glossary for w in ("base", "tuned", "test", "probe", "retention"))
    assert not at.warning and not at.error  # real answers from a trained base: nothing to warn about


CHECKS = {"overview": check_overview, "dataset": check_dataset, "synthesis": check_synthesis,
          "training": check_training, "compare": check_compare, "evaluation": check_evaluation}


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_seeded_store(seeded, page):
    at = open_page(page)
    CHECKS[page](at)


# ---- empty states ----------------------------------------------------------------------------------------------

def bare_project(home: Path) -> None:
    """A project that was registered but holds nothing: no files, no dataset, no run."""
    store = Store(home / DB_FILENAME, role="seed")
    try:
        store.upsert_project(PROJECT, "/src/bare", "abc123")
    finally:
        store.close()


EMPTY = {  # what each page says, with no project and with a project that holds nothing
    "no project": {page: "No project yet" for page in PAGES},
    "bare project": {"overview": "No runs yet", "dataset": "No dataset version yet",
                     "synthesis": "No synthesis run yet", "training": "No training run yet",
                     "compare": "No training run to compare yet", "evaluation": "No evaluation yet"},
}


@pytest.mark.parametrize("state", list(EMPTY))
def test_every_page_has_an_empty_state(dash, state):
    if state == "bare project":
        bare_project(dash)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        infos = [i.value for i in at.info]
        assert any(i.startswith(EMPTY[state][page]) for i in infos), (page, infos)
    if state == "bare project":
        at.switch_page("views/training.py").run()
        assert "No dataset version to train on yet: run a synthesis first." in [i.value for i in at.info]
        assert "Start training" not in labels(at.button)


# ---- interactions ----------------------------------------------------------------------------------------------

def sample_ids(dt, version: str) -> set[str]:
    return {r["sample_id"] for r in dt.browse_samples(PROJECT, version, limit=10_000)["rows"]}


def test_review_in_the_sample_browser_makes_a_new_version(dash):
    from dashboard.common import client

    seed_store(dash, samples=60)  # not 400: the page must show this home's v1, not another home's
    at = open_page("dataset")
    assert metrics(at)["Samples"] == "60"
    editor = at.data_editor[0]
    shown = editor.value
    edited, rejected = shown["sample_id"][0], shown["sample_id"][1]
    before = {r["sample_id"]: r for r in client().browse_samples(PROJECT, "v1", limit=100)["rows"]}
    at.session_state[editor.key] = {"edited_rows": {0: {"output": "Edited by a reviewer."}, 1: {"reject": True}},
                                    "added_rows": [], "deleted_rows": []}
    at.text_input(key="note").input("fix one, drop one")
    clean(at.run())
    save = at.button[0]
    assert save.label == "Save as a new version (1 edited, 1 rejected)" and not save.disabled
    clean(save.click().run())

    assert [s.value for s in at.success] == ["Saved as v2; v1 is unchanged. v2 is now the current version: training "
                                             "and export use it by default."]
    dt = client()
    versions = {v["version"]: v for v in dt.datasets(PROJECT)}
    assert sorted(versions) == ["v1", "v2"]
    assert (versions["v2"]["parent"], versions["v2"]["note"], versions["v2"]["samples"]) == ("v1", "fix one, drop one",
                                                                                             59)
    assert sample_ids(dt, "v1") - sample_ids(dt, "v2") == {rejected}
    found = dt.browse_samples(PROJECT, "v2", search="Edited by a reviewer.")
    assert [r["sample_id"] for r in found["rows"]] == [edited]
    v1 = {r["sample_id"]: r for r in dt.browse_samples(PROJECT, "v1", limit=100)["rows"]}
    assert v1 == before  # v1 is unchanged, its edited and rejected samples included
    assert dt.browse_samples(PROJECT, "v1", search="Edited by a reviewer.")["total"] == 0

    # the page moved to v2: its figures, a clean editor, and nothing left to save twice
    assert at.selectbox(key="version").value == "v2"
    assert metrics(at)["Samples"] == "59"
    assert "Lineage: v2 review (fix one, drop one) ← v1 synthesis" in [c.value for c in at.caption]
    assert at.data_editor[0].key.startswith("editor-v2-")
    assert at.button[0].label == "Save as a new version (0 edited, 0 rejected)" and at.button[0].disabled
    assert at.text_input(key="note").value == ""
    clean(at.run())
    assert sorted(v["version"] for v in dt.datasets(PROJECT)) == ["v1", "v2"]


def test_a_multi_turn_sample_is_edited_turn_by_turn_and_the_edit_is_exported(dash, tmp_path):
    from backend.export_config import ExportConfig
    from dashboard.common import client

    seed_store(dash, samples=60)
    at = open_page("dataset")
    at.selectbox(key="task").select("multiturn")
    clean(at.run())
    rows = at.data_editor[0].value
    assert set(rows["task"]) == {"multiturn"} and set(rows["turns"]) == {4}
    edited, rejected = rows["sample_id"][0], rows["sample_id"][1]
    assert [t.label for t in at.text_area if t.key.startswith(f"turn-v1-{edited}-")] == [
        "Turn 1 · user", "Turn 2 · assistant", "Turn 3 · user", "Turn 4 · assistant"]
    at.text_area(key=f"turn-v1-{edited}-2").input("Import it first, then call it.")
    at.text_area(key=f"turn-v1-{edited}-4").input("With the manifest of the harbour.")
    at.checkbox(key=f"reject-v1-{rejected}").check()
    clean(at.run())
    save = at.button[0]
    assert save.label == "Save as a new version (1 edited, 1 rejected)" and not save.disabled
    clean(save.click().run())

    dt = client()
    assert dt.current_dataset(PROJECT) == "v2"
    v2 = {r["sample_id"]: r for r in dt.browse_samples(PROJECT, "v2", limit=100)["rows"]}
    assert rejected not in v2
    turns = v2[edited]["messages"]
    assert [t["content"] for t in turns][1::2] == ["Import it first, then call it.",
                                                   "With the manifest of the harbour."]
    assert v2[edited]["output"] == "With the manifest of the harbour."  # the grid's column follows the last turn
    out = dt.export(PROJECT, ExportConfig(format="sharegpt", out=str(tmp_path / "out")))
    assert out["version"] == "v2"
    exported = "".join(open(f).read() for f in out["files"] if f.endswith(".jsonl"))
    assert "With the manifest of the harbour." in exported

    # the old version is still there to look at, with a warning that it leaves the review out
    at.selectbox(key="version").select("v1")
    clean(at.run())
    assert [w.value for w in at.warning] == [
        "v1 leaves out review v2 (reviewed copy of v1): its decisions on 2 sample(s) are not in v1. The current "
        "version is v2."]
    assert "Make v1 the current version" in labels(at.button)


def test_search_and_filters_narrow_the_sample_browser(dash):
    seed_store(dash, samples=400)
    at = open_page("dataset")
    at.number_input(key="page").set_value(3)
    clean(at.run())
    assert labels(at.number_input) == ["Page (of 16; 400 matches)"]
    assert at.data_editor[0].key == "editor-v1-3---"

    at.text_input(key="search").input("fn_12")  # fn_12 and fn_120 … fn_129
    clean(at.run())
    assert labels(at.number_input) == ["Page (of 1; 11 matches)"]
    assert at.number_input(key="page").value == 1  # page 3 no longer exists: back to the first
    rows = at.data_editor[0].value
    assert len(rows) == 11 and rows["instruction"].str.contains("fn_12").all()

    at.text_input(key="search").input("")
    at.selectbox(key="task").select("qa")  # every 5th sample; of those, i % 10 == 5 are in train
    at.selectbox(key="split").select("train")
    clean(at.run())
    assert labels(at.number_input) == ["Page (of 2; 40 matches)"]
    rows = at.data_editor[0].value
    assert set(rows["task"]) == {"qa"} and set(rows["split"]) == {"train"} and len(rows) == 25

    at.selectbox(key="task").select("")
    at.selectbox(key="split").select("")
    at.text_input(key="search").input("no sample says this")
    clean(at.run())
    assert labels(at.number_input) == ["Page (of 1; 0 matches)"]
    assert "No sample matches these filters." in [i.value for i in at.info]
    assert not at.data_editor


def side_by_side_rows(at: AppTest) -> list[str]:
    """The sample ids of the side-by-side viewer's rows, in order (each row starts with `**sample_id** · task`)."""
    return [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**s")]


def test_evaluation_flip_filter_shows_only_those_rows(seeded):
    at = open_page("evaluation")
    regressed = [f"s{i:08d}" for i in range(12) if i % 3 == 0]  # tuned ROUGE-L 0.1 against base 0.2
    for eval_set in ("test", "retention"):
        at.radio[0].set_value(eval_set)
        at.selectbox(key="eval-flip").select("regressed")
        clean(at.run())
        assert labels(at.number_input) == ["Page (of 1; 4 rows)"], eval_set
        assert side_by_side_rows(at) == regressed, eval_set
        tuned = [c.value for c in at.caption if c.value.startswith("Tuned ")]
        assert len(tuned) == 4 and all(c.startswith("Tuned rouge_l 0.100") for c in tuned), tuned

        at.selectbox(key="eval-flip").select("improved")
        clean(at.run())
        assert labels(at.number_input) == ["Page (of 1; 8 rows)"], eval_set
        assert sorted(side_by_side_rows(at)) == [f"s{i:08d}" for i in range(12) if i % 3], eval_set

    at.selectbox(key="eval-flip").select("regressed")
    at.selectbox(key="eval-task").select("qa")  # s0 and s6 are qa, s3 and s9 are not
    clean(at.run())
    assert side_by_side_rows(at) == ["s00000000"]  # of the qa rows (0, 5, 10) only 0 regressed


def test_evaluation_probe_set_says_what_was_learned_and_finds_fixed_hallucinations(seeded):
    at = open_page("evaluation")
    at.radio[0].set_value("probe")
    clean(at.run())
    shown = metrics(at)
    assert shown["Right fact (tuned)"] == "67%" and shown["Invented names (tuned)"] == "0%"
    captions = [c.value for c in at.caption]
    assert any("does it know the repository?" in c for c in captions)
    assert "base 0%" in captions and "base 50%" in captions  # fact right, names invented, for the base
    at.selectbox(key="eval-flip").select("hallucination_fixed")
    clean(at.run())
    fixed = [f"p{i:08d}" for i in range(12) if i % 2 == 0 and i % 3]  # base invented a name, tuned stated the fact
    assert [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**p")] == fixed
    assert any(c.value.startswith("invented: `tidemark.made_up_") for c in at.caption)


def test_synthesis_estimate_offers_to_start_without_starting(seeded):
    from backend.synth_config import SynthConfig
    from dashboard.common import client

    at = open_page("synthesis")
    at.button(key="FormSubmitter:synth-form-Estimate cost").click()
    clean(at.run())
    assert "Estimate" in [s.value for s in at.subheader]
    shown = metrics(at)
    expected = client().synth(PROJECT, SynthConfig(), dry_run=True)["estimate"]
    assert expected["requests"] > 0
    assert shown["Requests"] == f"{expected['requests']:,}"
    assert shown["Tokens in (est.)"] == f"{expected['tokens_in']:,}"
    assert shown["Done before / cached"] == "0 / 0"
    assert at.button(key="start-synth").label == "Start synthesis"
    # an estimate sends nothing and starts nothing
    assert [r["run_id"] for r in client().runs(PROJECT) if r["kind"] == "synth"] == [SYNTH_RUN]


def test_a_cancelled_synthesis_offers_resume_and_shows_no_live_rate(seeded):
    from dashboard.common import client

    client().store.update_run(SYNTH_RUN, status="cancelled")
    at = open_page("synthesis")
    shown = metrics(at)
    assert "Requests / min" not in shown and shown["Cost"] == "$0.0400"  # 200 requests of $0.0002 each, priced
    resume = at.button(key=f"resume-{SYNTH_RUN}")
    assert resume.label == "Resume run" and f"cancel-{SYNTH_RUN}" not in [b.key for b in at.button]


def test_a_link_opens_its_run_and_the_offline_generator_has_no_endpoint(seeded):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["project"] = PROJECT
    at.query_params["run"] = SYNTH_RUN
    at.run()
    clean(at.switch_page("views/synthesis.py").run())
    assert next(s for s in at.selectbox if s.label == "Run").value == SYNTH_RUN
    fields = {t.label: t.disabled for t in at.text_input}
    assert fields == {"Base URL (openai)": True, "Model (openai)": True}
    at.selectbox(key="synth-generator").select("openai")
    clean(at.run())
    assert {t.label: t.disabled for t in at.text_input} == {"Base URL (openai)": False, "Model (openai)": False}


def test_synthesis_form_weighs_every_task_type(seeded):
    from backend.synth_config import TASKS, SynthConfig

    at = open_page("synthesis")
    assert {t: at.number_input(key=f"mix-{t}").value for t in TASKS} == SynthConfig().task_mix  # `facts` too


def test_password_gate(seeded, monkeypatch):
    monkeypatch.setenv(PASSWORD_VARIABLE, "correct horse")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    clean(at.run())
    only_the_form = (["DocTune"], ["Access password"], ["Enter"])

    def gate():
        return titles(at), labels(at.text_input), labels(at.button)

    assert gate() == only_the_form
    assert not at.dataframe and not at.metric and not at.info

    at.switch_page("views/dataset.py")  # another page's address: the same gate
    clean(at.run())
    assert gate() == only_the_form and not at.metric

    at.text_input[0].input("wrong horse")
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Wrong password."]
    assert gate() == only_the_form and not at.metric

    at.text_input[0].input("correct horse")
    at.button[0].click()
    clean(at.run())
    assert titles(at) == ["Corpus & dataset"]
    assert metrics(at)["Samples"] == "400"
    at.switch_page("views/overview.py")
    check_overview(clean(at.run()))  # the session stays logged in


def test_a_finished_run_leads_to_its_evaluation_export_and_merge(seeded):
    """The next steps of a completed run: its evaluations with their results, each step's command, and an export
    that the page offers as one zip to download."""
    import zipfile

    at = open_page("training")
    at.selectbox(key="train-run-picked").select(TRAIN_RUNS[0]).run()
    clean(at)
    assert "Next steps" in [h.value for h in at.header]
    code = [c.value for c in at.code]
    assert f"doctune eval --run {TRAIN_RUNS[0]}" in code
    assert f"doctune export --project {PROJECT} --dataset v1 --format alpaca --out DIR" in code
    assert f"doctune merge {TRAIN_RUNS[0]} --dtype bf16" in code
    lines = [m.value for m in at.markdown]
    assert any(line.startswith(f"- `{EVAL_RUN}` evaluation, **completed**") and "ROUGE-L tuned 0.400 (Δ +0.200)"
               in line and "judge win rate 0.50" in line for line in lines), lines
    next(b for b in at.button if b.label == "Export v1 as alpaca").click().run()
    clean(at)
    assert at.get("download_button"), "no download offered"
    archive = Path(at.session_state[f"export-{PROJECT}-v1-alpaca"]["archive"])
    assert archive.name == f"{PROJECT}_v1_alpaca.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert f"{PROJECT}_v1_alpaca/manifest.json" in names and f"{PROJECT}_v1_alpaca/train.jsonl" in names, names


@pytest.mark.slow
def test_training_started_from_the_form_then_shown_with_its_curves(seeded):
    """The form starts a real (tiny) run that outlives the script run; the page then shows its curves."""
    import time

    from dashboard.common import client

    at = open_page("training")
    next(s for s in at.selectbox if s.label == "Preset").select("tiny").run()
    max_steps = next(n for n in at.number_input if n.label.startswith("Max steps"))
    max_steps.set_value(6)
    next(n for n in at.number_input if n.label.startswith("Eval every")).set_value(3)
    next(n for n in at.number_input if n.label.startswith("Checkpoint every")).set_value(3)
    next(b for b in at.button if b.label == "Start training").click().run()
    clean(at)
    assert any("Queued train-" in s.value for s in at.success)
    run_id = at.session_state["train-run"]
    deadline = time.monotonic() + 300
    while True:
        run = next(r for r in client().runs(PROJECT) if r["run_id"] == run_id)
        if run["status"] not in {"queued", "running"}:
            break
        assert time.monotonic() < deadline, "the tiny run did not finish in 5 minutes"
        time.sleep(1)
    assert run["status"] == "completed" and run["summary"]["global_step"] == 6, run
    at.run()
    clean(at)
    assert metrics(at)["Step"] == "6"
    assert len(at.get("plotly_chart")) >= 2  # curves and resources


def test_synthesis_page_charts_the_limiter(dash):
    """A run's limiter timeline (as `Limiter.timeline_point` records it) becomes one chart with both panels."""
    seed_store(dash)
    store = Store(dash / DB_FILENAME, role="seed")
    try:
        store.con.executemany("INSERT INTO metrics (run_id, step, name, value, ts) VALUES (?, ?, ?, ?, now())", [
            (SYNTH_RUN, 1000 + 5 * i, f"limiter/{name}", value) for i in range(6) for name, value in (
                ("ok", 40 * i), ("rate_limited", 3 * i), ("errors", i), ("stalls", i // 3), ("cap", 16 - i),
                ("in_flight", 4), ("rate_rpm", 582.0))])
    finally:
        store.close()
    at = open_page("synthesis")
    charts = [c for c in at.get("plotly_chart") if "Requests in flight" in c.proto.spec]
    assert len(charts) == 1
    assert all(f'"name":"{name}"' in charts[0].proto.spec.replace(" ", "")
               for name in ("ok", "429", "errors", "stalls", "in-flightcap", "inflight"))


def test_a_changed_run_link_wins_over_the_run_picked_before(seeded):
    """The training picker keeps its choice across reruns (a refreshing panel), but a `?run=` link it has not
    seen yet chooses the run it names."""
    first, second = TRAIN_RUNS
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    clean(at.switch_page("views/training.py").run())
    clean(at.selectbox(key="train-run-picked").select(second).run())
    at.query_params["run"] = first  # a link to the other run, after a choice on the page
    clean(at.run())
    assert at.selectbox(key="train-run-picked").value == first
    clean(at.selectbox(key="train-run-picked").select(second).run())
    clean(at.run())  # the same link again: the choice made on the page stays
    assert at.selectbox(key="train-run-picked").value == second


def test_the_synthesis_panel_reads_the_run_progress_once_per_draw(seeded, monkeypatch):
    from dashboard.common import client

    dt, reads = client(), []
    read = dt.synth_progress
    monkeypatch.setattr(dt, "synth_progress", lambda run_id: reads.append(run_id) or read(run_id))
    open_page("synthesis")
    assert reads == [SYNTH_RUN]


def test_a_continued_run_shows_its_parent_and_its_evaluation_against_the_previous_adapter(dash):
    """A run that continued another's adapter names its parent on the Training page; its evaluation shows both
    adapters per group of files (changed, unchanged) on the Evaluation page."""
    seed_store(dash, samples=60)
    seed_continued_run(dash)

    at = open_page("training")
    clean(at.selectbox(key="train-run-picked").select("train-continued").run())
    assert f"Continues run {TRAIN_RUNS[0]}'s adapter, on dataset version v1." in [c.value for c in at.caption]
    assert "doctune train --from train-continued" in [c.value for c in at.code]

    at = open_page("evaluation")
    clean(at.selectbox[0].select("eval-continued").run())
    assert "Against the previous adapter" in [h.value for h in at.subheader]
    text = [m.value for m in at.markdown]
    assert "**Changed files: did it learn the change?** (3 prompts: 1 test, 2 probe)" in text
    assert "**Unchanged files: did it keep the rest?** (4 prompts: 2 test, 2 probe)" in text
    compared = [d.value for d in at.dataframe if "continued" in d.value.columns]
    assert len(compared) == 2
    assert compared[0].set_index("metric").loc["rouge_l", ["previous", "continued"]].tolist() == [0.25, 0.75]
    assert compared[1].set_index("metric").loc["rouge_l", ["previous", "continued"]].tolist() == [0.8, 0.78]


# ---- the playground --------------------------------------------------------------------------------------------

def test_playground_without_an_endpoint_says_how_to_serve(seeded):
    at = open_page("playground")
    assert any("doctune serve --run RUN --detach" in i.value for i in at.info), [i.value for i in at.info]


@pytest.mark.slow
def test_playground_streams_base_and_tuned_from_the_endpoint(seeded, dash):
    """A real endpoint (Ray Serve, the tiny base and an adapter): a held-out example asked, both answers shown, each
    what the endpoint answers any OpenAI client."""
    import socket

    from openai import OpenAI

    from backend.base_models import resolve_model_path
    from dashboard.common import client
    from tests.tiny_adapters import random_adapter, trained_run

    dt = client()
    base = resolve_model_path("tiny", home=dash)
    trained_run(dt.store, "train-play", random_adapter(base, 3, dash / "adapter-play"), project=PROJECT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = dt.serve(["train-play"], port=port)
    try:
        at = open_page("playground")
        assert served["url"] in at.caption[0].value
        example = at.selectbox(key="playground-example")
        held_out = example.options[1]
        assert held_out.startswith("How do I call fn_") and int(held_out.split("fn_")[1].split()[0]) % 10 == 0
        example.set_value(held_out).run()
        assert at.text_area(key="playground-prompt").value == held_out
        at.slider[0].set_value(32).run()
        clean(at.button[0].click().run())
        api = OpenAI(base_url=served["url"], api_key="none", max_retries=0)
        expected = [api.chat.completions.create(model=m, messages=[{"role": "user", "content": held_out}],
                                                max_tokens=32, temperature=0).choices[0].message.content
                    for m in ("base", "train-play")]
        assert [h.value for h in at.subheader] == ["Base", "Tuned (train-play)"]
        shown = [m.value for m in at.markdown]
        assert all(text in shown for text in expected if text), (expected, shown)
    finally:
        dt.stop_serving()
