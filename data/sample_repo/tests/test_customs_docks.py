from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from tidemark.customs import HoldCode, HoldRegistry, screen_manifest
from tidemark.docks import DockDoor, DockSchedule
from tidemark.errors import CustomsHoldError, DockConflictError
from tidemark.manifest import ManifestLine, ShipmentManifest

MID = "BWF-2024-000123-X"
DAY = date(2024, 6, 3)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 6, 3, hour, minute)


def test_release_requires_documents(fixed_clock):
    reg = HoldRegistry(clock=fixed_clock)
    reg.place(MID, "h11")
    with pytest.raises(CustomsHoldError) as info:
        reg.release(MID, "H11")
    assert info.value.code == "TM-4002"
    assert info.value.context["missing"] == ["commercial_invoice", "packing_list"]
    reg.attach_document(MID, "H11", "commercial_invoice")
    reg.attach_document(MID, "H11", "packing_list")
    hold = reg.release(MID, "H11")
    assert not hold.is_active and not hold.forced
    assert reg.is_clear(MID)


def test_force_release_is_flagged():
    reg = HoldRegistry()
    reg.place(MID, HoldCode.H90)
    hold = reg.release(MID, "H90", force=True)
    assert hold.forced


def test_unknown_code_and_missing_hold():
    reg = HoldRegistry()
    with pytest.raises(CustomsHoldError) as info:
        reg.place(MID, "H99")
    assert info.value.code == "TM-4001"
    with pytest.raises(CustomsHoldError) as info:
        reg.release(MID, "H17")
    assert info.value.code == "TM-4003"


def test_auto_release_only_for_lapsing_codes():
    placed = datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)
    reg = HoldRegistry()
    reg.place(MID, "H11", at=placed)
    reg.place(MID, "H40", at=placed)
    released = reg.auto_release(placed + timedelta(hours=48))
    assert [h.code for h in released] == [HoldCode.H11]
    assert [h.code for h in reg.active_for(MID)] == [HoldCode.H40]


def test_active_holds_sorted_by_severity():
    reg = HoldRegistry()
    for code in ("H31", "H52", "H17"):
        reg.place(MID, code)
    assert [h.code.value for h in reg.active_for(MID)] == ["H52", "H17", "H31"]


def test_screen_manifest_predicts_holds():
    m = ShipmentManifest(MID, "BWH", "KSP")
    m.add_line(ManifestLine("PAL", "wooden pallets", 30, 600.0, hs_code="441510"))
    m.add_line(ManifestLine("SOLV", "paint thinner", 4, 80.0, hs_code="381400", hazmat_class="3"))
    m.add_line(ManifestLine("MISC", "sundries", 1, 25.0))
    assert screen_manifest(m) == [HoldCode.H11, HoldCode.H17, HoldCode.H40]


@pytest.fixture
def schedule() -> DockSchedule:
    doors = [DockDoor("D01"), DockDoor("D02", reefer_capable=True), DockDoor("D07", hazmat_ok=True)]
    return DockSchedule(doors, open_time="06:00", close_time="22:00", turnaround_minutes=20)


def test_booking_picks_first_free_door(schedule: DockSchedule):
    first = schedule.book(MID, at(8))
    second = schedule.book("BWF-2024-000124-C", at(8, 30))
    assert (first.door_id, second.door_id) == ("D01", "D02")
    assert first.booking_id == "DK-20240603-0001"


def test_turnaround_is_enforced(schedule: DockSchedule):
    schedule.book(MID, at(8), door_id="D01")
    with pytest.raises(DockConflictError) as info:
        schedule.book("X", at(8, 55), door_id="D01")  # ends 8:45 + 20 min turnaround
    assert info.value.code == "TM-5001"
    assert schedule.book("X", at(9, 5), door_id="D01").door_id == "D01"


def test_operating_hours_and_capabilities(schedule: DockSchedule):
    with pytest.raises(DockConflictError) as info:
        schedule.book(MID, at(21, 30))
    assert info.value.code == "TM-5002"
    with pytest.raises(DockConflictError) as info:
        schedule.book(MID, at(9), reefer=True, hazmat=True)
    assert info.value.code == "TM-5004"
    assert schedule.book(MID, at(9), hazmat=True).door_id == "D07"


def test_free_windows_and_cancel(schedule: DockSchedule):
    booking = schedule.book(MID, at(10), 60, door_id="D01")
    windows = schedule.free_windows(DAY, "D01")
    assert windows == [(at(6), at(9, 40)), (at(11, 20), at(22))]
    assert schedule.suggest(DAY, 45) == ("D01", at(6))
    assert schedule.suggest(DAY, 45, not_before=at(9, 30)) == ("D02", at(9, 30))
    schedule.cancel(booking.booking_id)
    with pytest.raises(DockConflictError) as info:
        schedule.cancel(booking.booking_id)
    assert info.value.code == "TM-5003"


def test_utilisation(schedule: DockSchedule):
    schedule.book(MID, at(6), 480, door_id="D01")
    util = schedule.utilisation(DAY)
    assert util["D01"] == 0.5 and util["D02"] == 0.0
