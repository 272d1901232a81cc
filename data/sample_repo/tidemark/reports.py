"""Plain-text reports for terminals, e-mails and the ops wall board.

All functions return strings (no printing) so they can be reused by the CLI,
by the nightly e-mail job and in tests.  Tables are rendered with
:func:`render_table`: a header row, a dashed rule and left-aligned text /
right-aligned numbers.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Sequence

from .customs import HoldRegistry
from .docks import DockSchedule
from .manifest import ShipmentManifest
from .ratecard import Quote
from .slotting import SlotPlanner
from .units import DEFAULT_VOLUMETRIC_DIVISOR

__all__ = ["render_table", "format_quote", "manifest_summary", "dock_board", "yard_map", "hold_report"]

Cell = str | int | float | Decimal | None


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return f"{cell:,.1f}"
    return str(cell)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Render rows as a fixed-width text table.

    Numbers (``int``, ``float``, ``Decimal``) are right-aligned, everything
    else left-aligned; ``None`` renders as ``-``; floats get one decimal and
    thousands separators.

    Examples:
        >>> print(render_table(["door", "util"], [["D01", 0.5]]))
        door  util
        ----  ----
        D01    0.5
    """
    texts = [[_text(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric_types = (int, float, Decimal)
    numeric = [
        any(isinstance(row[i], numeric_types) for row in rows)
        and all(isinstance(row[i], numeric_types) for row in rows if row[i] is not None)
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str], align: bool = True) -> str:
        parts = []
        for i, cell in enumerate(cells):
            parts.append(cell.rjust(widths[i]) if align and numeric[i] else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out = [line(list(headers), align=False), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in texts)
    return "\n".join(out)


def format_quote(quote: Quote) -> str:
    """Multi-line breakdown of a :class:`~tidemark.ratecard.Quote`."""
    rows: list[Sequence[Cell]] = [
        ["base", quote.base],
        ["bunker", quote.bunker],
        [f"service ({quote.service.value})", quote.service_charge],
        ["total", quote.total],
    ]
    head = f"Quote {quote.card_id} {quote.lane} {quote.chargeable_kg:g} kg chargeable ({quote.currency})"
    return head + "\n" + render_table(["item", "amount"], rows)


def manifest_summary(manifest: ShipmentManifest, *, divisor: int = DEFAULT_VOLUMETRIC_DIVISOR) -> str:
    """Summary block and per-line table of a manifest."""
    head = (
        f"{manifest.manifest_id}  {manifest.origin}>{manifest.destination}  "
        f"{manifest.container_type.value}  carrier={manifest.carrier}  status={manifest.status.value}"
    )
    rows: list[Sequence[Cell]] = [
        [line.sku, line.quantity, float(line.gross_kg), line.chargeable_kg(divisor), line.hs_code or None,
         line.hazmat_class]
        for line in manifest.lines
    ]
    table = render_table(["sku", "qty", "gross_kg", "chargeable_kg", "hs", "haz"], rows)
    foot = (
        f"total gross {manifest.total_gross_kg:,.1f} kg, chargeable "
        f"{manifest.total_chargeable_kg(divisor):,.1f} kg, {manifest.total_packages} packages"
    )
    return "\n".join([head, table, foot])


def dock_board(schedule: DockSchedule, day: date) -> str:
    """Wall-board view of a day's dock bookings, with utilisation per door."""
    util = schedule.utilisation(day)
    rows: list[Sequence[Cell]] = [
        [b.door_id, f"{b.start:%H:%M}-{b.end:%H:%M}", b.manifest_id, b.booking_id,
         "R" if b.reefer else "", "H" if b.hazmat else ""]
        for b in schedule.bookings_for(day)
    ]
    board = render_table(["door", "window", "manifest", "booking", "rf", "hz"], rows)
    usage = ", ".join(f"{door} {share:.0%}" for door, share in util.items())
    return f"Dock board {day.isoformat()}\n{board}\nutilisation: {usage}"


def yard_map(planner: SlotPlanner, block_id: str) -> str:
    """Stack heights of a block as a grid: one line per row, one column per bay.

    ``.`` is an empty stack, digits give the height, ``*`` marks reefer rows.
    """
    block = planner.blocks[block_id]
    header = "      " + " ".join(f"{bay:02d}" for bay in range(1, block.bays + 1))
    lines = [f"Block {block_id} ({planner.occupancy(block_id):.0%} full)", header]
    for row in range(1, block.rows + 1):
        marker = "*" if row in block.reefer_rows else " "
        cells = []
        for bay in range(1, block.bays + 1):
            height = len(planner.stack(block_id, bay, row))
            cells.append(f"{height:>2}" if height else " .")
        lines.append(f"r{row:02d}{marker}  " + " ".join(cells))
    return "\n".join(lines)


def hold_report(registry: HoldRegistry, manifest_id: str) -> str:
    """All holds (active and released) of a manifest with missing documents."""
    rows: list[Sequence[Cell]] = []
    for hold in registry.history(manifest_id):
        state = "active" if hold.is_active else ("forced" if hold.forced else "released")
        rows.append([hold.code.value, hold.rule.title, hold.rule.severity, state,
                     ", ".join(sorted(hold.missing_documents())) if hold.is_active else None])
    status = "CLEAR" if registry.is_clear(manifest_id) else "HELD"
    return f"Customs {manifest_id}: {status}\n" + render_table(["code", "title", "sev", "state", "missing"], rows)
