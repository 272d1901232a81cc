"""The store's dashboard reads: aggregates computed in DuckDB, pages of rows, review as a new version."""

import pytest

from backend.config import DB_FILENAME
from backend.store import Store
from tests.seed_store import EVAL_RUN, PROJECT, SYNTH_RUN, TRAIN_RUNS, seed_store


@pytest.fixture
def store(tmp_path):
    seed_store(tmp_path, samples=400, metric_points=1200)
    s = Store(tmp_path / DB_FILENAME)
    yield s
    s.close()


def test_dataset_profile_counts_what_the_rows_hold(store):
    p = store.dataset_profile(PROJECT, "v1")
    rows = store.dataset_rows(PROJECT, "v1")
    assert p["samples"] == len(rows) == 400
    assert p["splits"] == {s: sum(r["split"] == s for r in rows) for s in ("test", "train", "val")}
    assert p["tasks"] == {t: sum(r["task"] == t for r in rows) for t in {r["task"] for r in rows}}
    assert sum(p["judge_histogram"].values()) == p["judged"] == 400
    assert min(p["judge_histogram"]) >= 1 and max(p["judge_histogram"]) <= 10
    cov = p["coverage"]
    assert cov["files_with_samples"] == len({r["path"] for r in rows})
    assert sum(k * v for k, v in cov["samples_per_file"].items()) == 400
    assert cov["top_files"][0]["samples"] == max(cov["samples_per_file"])
    assert p["curation"]["duplicate_rate"] > 0
    with pytest.raises(KeyError):
        store.dataset_profile(PROJECT, "v9")


def test_browse_pages_filters_and_treats_search_as_plain_text(store):
    page1 = store.browse_samples(PROJECT, "v1", limit=25)
    page2 = store.browse_samples(PROJECT, "v1", limit=25, offset=25)
    assert page1["total"] == 400 and len(page1["rows"]) == 25
    assert not {r["sample_id"] for r in page1["rows"]} & {r["sample_id"] for r in page2["rows"]}
    found = store.browse_samples(PROJECT, "v1", search="FN_12", task="qa")
    assert found["total"] == len(found["rows"]) > 0
    assert all("fn_12" in r["instruction"] and r["task"] == "qa" for r in found["rows"])
    assert store.browse_samples(PROJECT, "v1", search="fn%12")["total"] == 0  # % is not a wildcard
    assert store.browse_samples(PROJECT, "v1", search="fn_1_")["total"] == 0  # nor _
    assert store.browse_samples(PROJECT, "v1", split="test")["total"] == 40


def test_a_review_makes_a_new_version_and_never_changes_the_old(store):
    before = store.dataset_rows(PROJECT, "v1")
    new = store.derive_dataset(PROJECT, "v1", edits={"s00000002": {"output": "fixed by a reviewer"}},
                               rejects=["s00000003", "s00000004"], note="review 1")
    assert new == "v2"
    assert store.dataset_rows(PROJECT, "v1") == before
    after = {r["sample_id"]: r for r in store.dataset_rows(PROJECT, "v2")}
    assert len(after) == 398 and "s00000003" not in after and "s00000004" not in after
    assert after["s00000002"]["output"] == "fixed by a reviewer"
    info = {d["version"]: d for d in store.datasets(PROJECT)}["v2"]
    assert info["parent"] == "v1" and info["note"] == "review 1"
    assert info["stats"]["edited"] == 1 and info["stats"]["rejected"] == 2
    with pytest.raises(ValueError, match="nothing to change"):
        store.derive_dataset(PROJECT, "v1")
    with pytest.raises(ValueError, match="only instruction, input, output"):
        store.derive_dataset(PROJECT, "v1", edits={"s00000002": {"split": "train"}})
    with pytest.raises(KeyError, match="not in"):
        store.derive_dataset(PROJECT, "v1", rejects=["no-such-sample"])
    assert [d["version"] for d in store.datasets(PROJECT)] == ["v1", "v2"]  # the failures made nothing


def test_curves_are_downsampled_in_the_store(store):
    series = store.metric_series(list(TRAIN_RUNS), ["loss", "eval_loss"], max_points=20).to_pylist()
    for run in TRAIN_RUNS:
        full = store.metrics(run, ["loss"]).to_pylist()
        assert len(full) == 100
        loss = [r for r in series if r["run_id"] == run and r["name"] == "loss"]
        assert len(loss) == 20  # 100 points in 20 equal buckets of 5: the mean is kept
        assert [r["x"] for r in loss] == sorted(r["x"] for r in loss)
        assert sum(r["value"] for r in loss) / 20 == pytest.approx(sum(r["value"] for r in full) / 100)
        assert all(r["min"] <= r["value"] <= r["max"] for r in loss)
    by_epoch = store.metric_series([TRAIN_RUNS[0]], ["loss"], x="epoch", max_points=10).to_pylist()
    assert len(by_epoch) == 10 and 0 < by_epoch[0]["x"] < by_epoch[-1]["x"] <= 3.0
    by_tokens = store.metric_series([TRAIN_RUNS[0]], ["loss"], x="num_tokens", max_points=10).to_pylist()
    assert by_tokens[-1]["x"] > 1000
    assert store.metric_names([TRAIN_RUNS[0]]) == sorted(
        ["epoch", "eval_loss", "grad_norm", "learning_rate", "loss", "num_tokens", "rss_mb"])


def test_run_table_and_eval_view(store):
    runs = {r["run_id"]: r for r in store.run_table(list(TRAIN_RUNS))}
    a = runs[TRAIN_RUNS[0]]
    assert a["best_eval_loss"] == min(r["value"] for r in store.metrics(TRAIN_RUNS[0], ["eval_loss"]).to_pylist())
    assert a["peak_rss_mb"] == 900 and a["last_step"] == 100
    assert a["eval"]["test"]["metrics"]["rouge_l"]["delta"] == pytest.approx(0.2)
    assert runs[TRAIN_RUNS[1]]["eval"] is None
    view = store.eval_view(EVAL_RUN, "test", flip="regressed")
    assert view["total"] == 4 and all(r["tuned_scores"]["rouge_l"] < r["base_scores"]["rouge_l"] for r in view["rows"])
    assert store.eval_view(EVAL_RUN, "test", flip="improved")["total"] == 8
    assert store.eval_view(EVAL_RUN, "test", task="qa")["total"] == 3
    assert view["judge"] == {"win": 4, "tie": 4, "loss": 4} and view["eval_sets"] == ["probe", "retention", "test"]
    with pytest.raises(ValueError):
        store.eval_view(EVAL_RUN, "test", flip="sideways")


def test_synth_progress_counts_units_and_recent_requests(store):
    p = store.synth_progress(SYNTH_RUN)
    assert p["requests"] == 200 and p["http_429"] == 10 and p["requests_last_minute"] == 200
    assert p["units"] == 201 and p["dead_letters"] == 1
    with pytest.raises(KeyError):
        store.synth_progress("nope")
