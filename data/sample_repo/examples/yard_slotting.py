"""Slot a vessel's discharge into yard block Y2 and show the stack map.

Run from the repository root:  python examples/yard_slotting.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark.errors import SlottingError  # noqa: E402
from tidemark.ids import container_check_digit  # noqa: E402
from tidemark.reports import yard_map  # noqa: E402
from tidemark.slotting import SlotPlanner, YardBlock  # noqa: E402


def container(serial: int) -> str:
    prefix = f"BWFU{serial:06d}"
    return prefix + str(container_check_digit(prefix))


def main() -> None:
    planner = SlotPlanner([YardBlock("Y2", bays=6, rows=4, max_tiers=3, reefer_rows=frozenset({4}))])
    discharge = [
        (container(410001), 28_500, False),
        (container(410002), 26_000, False),
        (container(410003), 12_000, False),
        (container(410004), 30_000, False),
        (container(410005), 21_000, True),
        (container(410006), 8_000, False),
        (container(410007), 24_000, True),
    ]
    for number, kg, reefer in discharge:
        address = planner.place(number, kg, reefer=reefer)
        print(f"{number} {kg:>6} kg {'reefer' if reefer else 'dry   '} -> {address}")

    print()
    print(yard_map(planner, "Y2"))
    print()
    try:
        planner.remove(container(410001))
    except SlottingError as exc:
        print(f"cannot lift {container(410001)}: {exc} (rehandles={exc.context['rehandles']})")
    print("lifted from", planner.remove(container(410003)))


if __name__ == "__main__":
    main()
