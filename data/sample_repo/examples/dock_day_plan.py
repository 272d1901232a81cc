"""Plan a morning at the north-basin dock doors and print the wall board.

Run from the repository root:  python examples/dock_day_plan.py
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark.config import load_config  # noqa: E402
from tidemark.docks import DockDoor, DockSchedule  # noqa: E402
from tidemark.errors import DockConflictError  # noqa: E402
from tidemark.ids import IdSequence  # noqa: E402
from tidemark.reports import dock_board  # noqa: E402

DAY = date(2024, 6, 3)


def main() -> None:
    cfg = load_config(env={}, overrides={"docks.turnaround_minutes": 15})
    doors = [DockDoor("D01"), DockDoor("D02"), DockDoor("D03", reefer_capable=True), DockDoor("D07", hazmat_ok=True)]
    schedule = DockSchedule.from_config(cfg, doors)
    ids = IdSequence(2024, 500)

    requests = [
        (datetime(2024, 6, 3, 6, 0), 60, False, False),
        (datetime(2024, 6, 3, 6, 30), 45, False, False),
        (datetime(2024, 6, 3, 6, 30), 90, True, False),
        (datetime(2024, 6, 3, 7, 0), 45, False, True),
        (datetime(2024, 6, 3, 7, 10), 30, False, False),
        (datetime(2024, 6, 3, 21, 40), 45, False, False),  # runs past closing time
    ]
    for start, minutes, reefer, hazmat in requests:
        manifest_id = ids.next_id()
        try:
            booking = schedule.book(manifest_id, start, minutes, reefer=reefer, hazmat=hazmat)
            print(f"booked {booking.booking_id} on {booking.door_id} for {manifest_id}")
        except DockConflictError as exc:
            print(f"refused {manifest_id}: {exc}")
            suggestion = schedule.suggest(DAY, minutes, reefer=reefer, hazmat=hazmat, not_before=start)
            if suggestion:
                print(f"  earliest alternative: {suggestion[0]} at {suggestion[1]:%H:%M}")
            else:
                print("  no alternative today")

    print()
    print(dock_board(schedule, DAY))
    print()
    for start, end in schedule.free_windows(DAY, "D01"):
        print(f"D01 free {start:%H:%M}-{end:%H:%M}")


if __name__ == "__main__":
    main()
