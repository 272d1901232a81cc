from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tidemark.config import load_config
from tidemark.errors import CarrierError, ConfigError, LedgerError, RetryExhaustedError
from tidemark.ledger import GENESIS_HASH, EventLedger
from tidemark.retry import RetryPolicy, retrying


def no_sleep(_: float) -> None:
    return None


def test_schedule_is_exponential_and_capped():
    assert RetryPolicy(jitter=0).schedule() == [0.5, 1.0, 2.0]
    assert RetryPolicy(max_attempts=6, base_delay_s=10, max_delay_s=30, jitter=0).schedule() == [10, 20, 30, 30, 30]


def test_jitter_stays_within_bounds():
    policy = RetryPolicy(base_delay_s=1.0, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay_for(1, rng) for _ in range(200)]
    assert all(0.9 <= d <= 1.1 for d in delays)


def test_call_retries_transient_then_succeeds():
    outcomes = [CarrierError("503", code="TM-7002"), TimeoutError(), "ok"]
    slept: list[float] = []

    def flaky() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert RetryPolicy(jitter=0).call(flaky, sleep=slept.append) == "ok"
    assert slept == [0.5, 1.0]


def test_non_retryable_error_propagates_immediately():
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise CarrierError("refused", code="TM-7003")

    with pytest.raises(CarrierError):
        RetryPolicy().call(refuse, sleep=no_sleep)
    assert len(calls) == 1


def test_exhaustion_chains_last_error():
    @retrying(RetryPolicy(max_attempts=3, jitter=0), sleep=no_sleep)
    def always_down() -> None:
        raise CarrierError("down", code="TM-7004")

    with pytest.raises(RetryExhaustedError) as info:
        always_down()
    assert info.value.code == "TM-9001"
    assert [a.number for a in info.value.attempts] == [1, 2, 3]
    assert isinstance(info.value.__cause__, CarrierError)


def test_policy_validation_and_from_config():
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    cfg = load_config(env={}, overrides={"retry.max_attempts": 7, "retry.base_delay_s": 2})
    policy = RetryPolicy.from_config(cfg)
    assert (policy.max_attempts, policy.base_delay_s) == (7, 2.0)


def test_ledger_chain_and_filters(fixed_clock):
    ledger = EventLedger(clock=fixed_clock)
    first = ledger.append("manifest.created", "M1")
    ledger.append("hold.placed", "M1", {"code": "H17"})
    ledger.append("dock.booked", "M2", {"door": "D01"})
    assert first.prev_hash == GENESIS_HASH
    assert ledger.verify() == 3
    assert [e.kind for e in ledger.events_for("M1")] == ["manifest.created", "hold.placed"]
    assert len(ledger.filter(kind="hold.*")) == 1
    seen: list[int] = []
    assert ledger.replay(lambda e: seen.append(e.seq), kinds={"dock.booked"}) == 1 and seen == [3]


def test_ledger_rejects_bad_kind():
    with pytest.raises(LedgerError) as info:
        EventLedger().append("ManifestCreated", "M1")
    assert info.value.code == "TM-8003"


def test_ledger_persists_and_detects_tampering(tmp_path: Path):
    path = tmp_path / "ledger.jsonl"
    ledger = EventLedger(path)
    for n in range(3):
        ledger.append("slot.assigned", f"C{n}", {"tier": n + 1})
    reloaded = EventLedger.load(path)
    assert reloaded.head_hash == ledger.head_hash
    reloaded.append("slot.released", "C2")
    assert len(EventLedger.load(path)) == 4

    lines = path.read_text().splitlines()
    event = json.loads(lines[1])
    event["payload"]["tier"] = 9
    lines[1] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError) as info:
        EventLedger.load(path)
    assert info.value.code == "TM-8001" and info.value.context["seq"] == 2


def test_ledger_sequence_gap(tmp_path: Path):
    path = tmp_path / "gap.jsonl"
    ledger = EventLedger(path)
    for n in range(3):
        ledger.append("dock.booked", f"M{n}")
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[2] + "\n")
    with pytest.raises(LedgerError) as info:
        EventLedger.load(path)
    assert info.value.code == "TM-8002"


def test_ledger_from_config(tmp_path: Path):
    memory = EventLedger.from_config(load_config(env={}))
    assert memory.path is None
    cfg = load_config(env={}, overrides={"ledger.path": str(tmp_path / "l.jsonl")})
    assert EventLedger.from_config(cfg).path == tmp_path / "l.jsonl"
