"""The limiter's timeline as the synthesis page reads it: counts turned into per-minute rates, and a resumed run's
new limiter (counts from 0 again) read as a fresh start, not as negative rates."""

from backend.store import Store


def test_counts_become_rates_and_a_resumed_limiter_starts_again(tmp_path):
    store = Store(tmp_path / "d.duckdb")
    store.create_run("r1", "synth", "p", {})

    def point(step, ok, limited, errors, stalls, cap=8, in_flight=3):
        return [(step, "limiter/ok", ok), (step, "limiter/rate_limited", limited), (step, "limiter/errors", errors),
                (step, "limiter/stalls", stalls), (step, "limiter/cap", cap), (step, "limiter/in_flight", in_flight),
                (step, "limiter/rate_rpm", 582.0)]

    store.record_metrics("r1", point(1000, 10, 1, 0, 0) + point(1005, 60, 3, 1, 2, cap=4)
                         + point(1100, 5, 0, 0, 1)  # resumed: a new limiter counts from 0
                         + [(7, "loss", 1.0)])  # not the limiter's
    points = store.limiter_timeline("r1")
    assert [p["t"] for p in points] == [0, 5, 100]
    assert points[0]["ok_per_min"] is None and points[0]["stalls"] == 0
    assert points[1]["ok_per_min"] == 50 * 60 / 5 and points[1]["rate_limited_per_min"] == 2 * 60 / 5
    assert points[1]["stalls"] == 2 and points[1]["cap"] == 4 and points[1]["in_flight"] == 3
    assert points[2]["ok_per_min"] == 5 * 60 / 95 and points[2]["stalls"] == 1
    assert sum(p["stalls"] for p in points) == 3 and store.limiter_timeline("nope") == []
