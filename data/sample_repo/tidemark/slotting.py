"""Container yard slotting.

The yard is divided into *blocks* (``Y1``, ``Y2``...), each a grid of bays x
rows with containers stacked up to ``max_tiers`` high.  A slot address is
written ``BLOCK/BAY/ROW/TIER`` with zero-padded bay and row, for example
``Y2/14/03/2`` (block Y2, bay 14, row 3, second tier).

Stacking rules enforced by :class:`SlotPlanner`:

* **heavy-low** - a container may only be placed on a container that is at
  least as heavy, with ``stack_tolerance`` (default 10 %) slack:
  ``new_kg <= below_kg * (1 + stack_tolerance)``;
* a whole stack may not exceed ``max_stack_kg`` (default 110 000 kg);
* reefers must sit in a block's ``reefer_rows`` (powered rows); dry boxes
  only use reefer rows when nothing else is free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from .errors import SlottingError
from .ids import validate_container_number

__all__ = ["SlotAddress", "YardBlock", "SlotPlanner", "parse_slot"]

_SLOT_RE = re.compile(r"^([A-Z][A-Z0-9]*)/(\d{2})/(\d{2})/(\d)$")


@dataclass(frozen=True, order=True)
class SlotAddress:
    """Position of a container in the yard."""

    block: str
    bay: int
    row: int
    tier: int

    def __str__(self) -> str:
        return f"{self.block}/{self.bay:02d}/{self.row:02d}/{self.tier}"


def parse_slot(text: str) -> SlotAddress:
    """Parse ``"Y2/14/03/2"`` into a :class:`SlotAddress`.

    Raises:
        ValueError: If the text is not a slot address.

    Examples:
        >>> parse_slot("Y2/14/03/2")
        SlotAddress(block='Y2', bay=14, row=3, tier=2)
    """
    match = _SLOT_RE.match(text.strip().upper())
    if not match:
        raise ValueError(f"not a slot address: {text!r}")
    return SlotAddress(match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4)))


@dataclass(frozen=True)
class YardBlock:
    """A rectangular yard block.

    Attributes:
        block_id: Block label such as ``"Y2"``.
        bays: Number of bays (numbered from 1).
        rows: Number of rows per bay (numbered from 1).
        max_tiers: Maximum stack height, default 4.
        reefer_rows: Row numbers that have reefer power points.
    """

    block_id: str
    bays: int
    rows: int
    max_tiers: int = 4
    reefer_rows: frozenset[int] = field(default_factory=frozenset)

    @property
    def capacity(self) -> int:
        """Total number of slots (``bays * rows * max_tiers``)."""
        return self.bays * self.rows * self.max_tiers


class SlotPlanner:
    """Assigns yard slots to containers.

    Args:
        blocks: Yard blocks in preference order.
        max_stack_kg: Maximum combined gross weight of one stack.
        stack_tolerance: Slack of the heavy-low rule (0.10 = 10 %).

    Examples:
        >>> planner = SlotPlanner([YardBlock("Y1", bays=2, rows=2)])
        >>> str(planner.place("BWFU1234565", 24000))
        'Y1/01/01/1'
    """

    def __init__(self, blocks: Iterable[YardBlock], *, max_stack_kg: float = 110_000.0,
                 stack_tolerance: float = 0.10) -> None:
        self.blocks: dict[str, YardBlock] = {b.block_id: b for b in blocks}
        self.max_stack_kg = max_stack_kg
        self.stack_tolerance = stack_tolerance
        self._stacks: dict[tuple[str, int, int], list[tuple[str, float]]] = {}
        self._where: dict[str, SlotAddress] = {}

    def stack(self, block_id: str, bay: int, row: int) -> list[tuple[str, float]]:
        """Containers in one stack as ``(number, gross_kg)``, bottom first."""
        return list(self._stacks.get((block_id, bay, row), []))

    def locate(self, container_number: str) -> SlotAddress | None:
        """Current slot of a container, or ``None`` if it is not in the yard."""
        return self._where.get(validate_container_number(container_number))

    def _check(self, block: YardBlock, bay: int, row: int, gross_kg: float, reefer: bool) -> str | None:
        """Return an error code if the container cannot go on this stack, else ``None``."""
        stack = self._stacks.get((block.block_id, bay, row), [])
        if reefer and row not in block.reefer_rows:
            return "TM-6003"
        if len(stack) >= block.max_tiers:
            return "TM-6001"
        if stack and gross_kg > stack[-1][1] * (1 + self.stack_tolerance):
            return "TM-6002"
        if sum(kg for _, kg in stack) + gross_kg > self.max_stack_kg:
            return "TM-6002"
        return None

    def _put(self, number: str, gross_kg: float, block_id: str, bay: int, row: int) -> SlotAddress:
        stack = self._stacks.setdefault((block_id, bay, row), [])
        stack.append((number, gross_kg))
        address = SlotAddress(block_id, bay, row, len(stack))
        self._where[number] = address
        return address

    def place(self, container_number: str, gross_kg: float, *, reefer: bool = False,
              block_id: str | None = None) -> SlotAddress:
        """Place a container in the first legal slot (block, bay, row order).

        Args:
            container_number: ISO 6346 container number.
            gross_kg: Gross weight of the loaded container.
            reefer: Container needs power.
            block_id: Restrict the search to one block.

        Returns:
            The assigned :class:`SlotAddress`.

        Raises:
            IdentifierError: ``TM-0101`` for a bad container number.
            ValueError: If the container is already in the yard.
            SlottingError: ``TM-6003`` if a reefer is requested and the
                searched blocks have no reefer rows; ``TM-6001`` if no slot
                satisfies the rules.
        """
        number = validate_container_number(container_number)
        if number in self._where:
            raise ValueError(f"{number} is already at {self._where[number]}")
        blocks = [self.blocks[block_id]] if block_id else list(self.blocks.values())
        if reefer and not any(b.reefer_rows for b in blocks):
            raise SlottingError(f"no reefer rows for {number}", code="TM-6003")
        passes = (False,) if reefer else (False, True)
        for allow_reefer_rows in passes:
            for block in blocks:
                for bay in range(1, block.bays + 1):
                    for row in range(1, block.rows + 1):
                        if not reefer and not allow_reefer_rows and row in block.reefer_rows:
                            continue
                        if self._check(block, bay, row, gross_kg, reefer) is None:
                            return self._put(number, gross_kg, block.block_id, bay, row)
        raise SlottingError(f"no legal slot for {number} ({gross_kg:.0f} kg)", code="TM-6001",
                            hint="free a stack or raise stack_tolerance")

    def place_at(self, container_number: str, gross_kg: float, block_id: str, bay: int, row: int,
                 *, reefer: bool = False) -> SlotAddress:
        """Place a container on a specific stack (used by the crane console).

        Raises:
            SlottingError: ``TM-6001`` if the stack is full, ``TM-6002`` for a
                heavy-low or stack-weight violation, ``TM-6003`` if a reefer
                is put on an unpowered row.
            KeyError: If ``block_id`` is unknown.
        """
        number = validate_container_number(container_number)
        if number in self._where:
            raise ValueError(f"{number} is already at {self._where[number]}")
        block = self.blocks[block_id]
        if not (1 <= bay <= block.bays and 1 <= row <= block.rows):
            raise ValueError(f"bay/row {bay}/{row} outside block {block_id}")
        code = self._check(block, bay, row, gross_kg, reefer)
        if code is not None:
            raise SlottingError(f"cannot put {number} on {block_id}/{bay:02d}/{row:02d}", code=code)
        return self._put(number, gross_kg, block_id, bay, row)

    def rehandles_for(self, container_number: str) -> int:
        """Number of containers stacked on top of this one.

        Raises:
            SlottingError: ``TM-6005`` if the container is not in the yard.
        """
        number = validate_container_number(container_number)
        address = self._where.get(number)
        if address is None:
            raise SlottingError(f"{number} is not in the yard", code="TM-6005")
        return len(self._stacks[(address.block, address.bay, address.row)]) - address.tier

    def remove(self, container_number: str) -> SlotAddress:
        """Lift a container off the top of its stack.

        Raises:
            SlottingError: ``TM-6005`` if absent, ``TM-6004`` if other
                containers sit on top (``context["rehandles"]`` says how many).
        """
        rehandles = self.rehandles_for(container_number)
        number = validate_container_number(container_number)
        address = self._where[number]
        if rehandles:
            raise SlottingError(f"{number} at {address} is buried under {rehandles}", code="TM-6004",
                                rehandles=rehandles)
        self._stacks[(address.block, address.bay, address.row)].pop()
        del self._where[number]
        return address

    def occupancy(self, block_id: str | None = None) -> float:
        """Used fraction of slot capacity (0.0-1.0), for one block or the whole yard."""
        blocks = [self.blocks[block_id]] if block_id else list(self.blocks.values())
        capacity = sum(b.capacity for b in blocks)
        used = sum(1 for a in self._where.values() if a.block in {b.block_id for b in blocks})
        return used / capacity if capacity else 0.0

    def __len__(self) -> int:
        return len(self._where)
