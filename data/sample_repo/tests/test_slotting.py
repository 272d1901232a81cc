from __future__ import annotations

import pytest

from tidemark.errors import IdentifierError, SlottingError
from tidemark.ids import container_check_digit
from tidemark.slotting import SlotAddress, SlotPlanner, YardBlock, parse_slot


def box(serial: int, owner: str = "BWFU") -> str:
    prefix = f"{owner}{serial:06d}"
    return f"{prefix}{container_check_digit(prefix)}"


@pytest.fixture
def planner() -> SlotPlanner:
    return SlotPlanner([YardBlock("Y1", bays=2, rows=2, max_tiers=3, reefer_rows=frozenset({2}))])


def test_slot_address_format_round_trip():
    address = SlotAddress("Y2", 14, 3, 2)
    assert str(address) == "Y2/14/03/2"
    assert parse_slot("y2/14/03/2") == address
    with pytest.raises(ValueError):
        parse_slot("Y2-14-03-2")


def test_heavy_low_rule_stacks_lighter_on_heavier(planner: SlotPlanner):
    a = planner.place(box(1), 24000)
    b = planner.place(box(2), 20000)
    c = planner.place(box(3), 25000)  # 25000 > 20000 * 1.1, so it opens a new stack
    assert str(a) == "Y1/01/01/1"
    assert str(b) == "Y1/01/01/2"
    assert str(c) == "Y1/02/01/1"


def test_reefers_need_powered_rows(planner: SlotPlanner):
    assert planner.place(box(10), 18000, reefer=True).row == 2
    dry_only = SlotPlanner([YardBlock("Y9", bays=1, rows=1)])
    with pytest.raises(SlottingError) as info:
        dry_only.place(box(11), 18000, reefer=True)
    assert info.value.code == "TM-6003"


def test_place_at_reports_violations(planner: SlotPlanner):
    planner.place_at(box(20), 10000, "Y1", 1, 1)
    with pytest.raises(SlottingError) as info:
        planner.place_at(box(21), 15000, "Y1", 1, 1)
    assert info.value.code == "TM-6002"
    with pytest.raises(SlottingError) as info:
        planner.place_at(box(22), 9000, "Y1", 1, 1, reefer=True)
    assert info.value.code == "TM-6003"


def test_yard_full(planner: SlotPlanner):
    for serial in range(30, 42):
        planner.place(box(serial), 10000)
    assert planner.occupancy() == 1.0
    with pytest.raises(SlottingError) as info:
        planner.place(box(50), 5000)
    assert info.value.code == "TM-6001"


def test_remove_buried_and_missing(planner: SlotPlanner):
    planner.place(box(60), 20000)
    planner.place(box(61), 19000)
    with pytest.raises(SlottingError) as info:
        planner.remove(box(60))
    assert info.value.code == "TM-6004" and info.value.context["rehandles"] == 1
    assert str(planner.remove(box(61))) == "Y1/01/01/2"
    assert planner.remove(box(60)).tier == 1
    with pytest.raises(SlottingError) as info:
        planner.remove(box(60))
    assert info.value.code == "TM-6005"


def test_invalid_container_number_rejected(planner: SlotPlanner):
    with pytest.raises(IdentifierError):
        planner.place("NOTABOX", 1000)
