"""Dock door scheduling.

Trucks and rail shuttles are loaded at numbered dock doors (``D01``,
``D02``...).  A :class:`DockSchedule` keeps bookings per door and enforces:

* operating hours (config keys ``docks.open`` / ``docks.close``),
* a *turnaround* gap between consecutive bookings on the same door
  (``docks.turnaround_minutes``, default 20 minutes), and
* door capabilities: reefer plugs and hazmat clearance.

Datetimes are naive and interpreted as terminal local time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Iterable

from .errors import DockConflictError

if TYPE_CHECKING:  # pragma: no cover
    from .config import TidemarkConfig

__all__ = ["DockDoor", "DockBooking", "DockSchedule", "parse_hhmm"]


def parse_hhmm(value: str | time) -> time:
    """Parse ``"HH:MM"`` into a :class:`datetime.time` (times pass through).

    Examples:
        >>> parse_hhmm("06:30")
        datetime.time(6, 30)
    """
    if isinstance(value, time):
        return value
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes or 0))


@dataclass(frozen=True)
class DockDoor:
    """A physical dock door.

    Attributes:
        door_id: Door label, e.g. ``"D04"``.
        reefer_capable: Door has reefer power points.
        hazmat_ok: Door is inside the dangerous-goods bund.
    """

    door_id: str
    reefer_capable: bool = False
    hazmat_ok: bool = False


@dataclass(frozen=True)
class DockBooking:
    """A confirmed booking. ``booking_id`` looks like ``DK-20240603-0001``."""

    booking_id: str
    door_id: str
    manifest_id: str
    start: datetime
    end: datetime
    reefer: bool = False
    hazmat: bool = False

    @property
    def minutes(self) -> int:
        """Booked duration in minutes."""
        return int((self.end - self.start).total_seconds() // 60)


class DockSchedule:
    """Bookings for a set of dock doors.

    Args:
        doors: The doors that may be booked, in preference order.
        open_time: Opening time (``"HH:MM"`` or :class:`datetime.time`), default ``"06:00"``.
        close_time: Closing time, default ``"22:00"``.
        turnaround_minutes: Minimum gap between bookings on one door, default 20.

    Examples:
        >>> sched = DockSchedule([DockDoor("D01"), DockDoor("D02", reefer_capable=True)])
        >>> b = sched.book("BWF-2024-000123-X", datetime(2024, 6, 3, 8, 0))
        >>> b.door_id, b.minutes
        ('D01', 45)
    """

    def __init__(
        self,
        doors: Iterable[DockDoor],
        *,
        open_time: str | time = "06:00",
        close_time: str | time = "22:00",
        turnaround_minutes: int = 20,
    ) -> None:
        self.doors: dict[str, DockDoor] = {d.door_id: d for d in doors}
        if not self.doors:
            raise ValueError("a DockSchedule needs at least one door")
        self.open_time = parse_hhmm(open_time)
        self.close_time = parse_hhmm(close_time)
        self.turnaround = timedelta(minutes=turnaround_minutes)
        self._bookings: dict[str, DockBooking] = {}
        self._counter = itertools.count(1)

    @classmethod
    def from_config(cls, config: "TidemarkConfig", doors: Iterable[DockDoor]) -> "DockSchedule":
        """Build a schedule using ``docks.*`` keys of a :class:`~tidemark.config.TidemarkConfig`."""
        return cls(doors, open_time=config.dock_open, close_time=config.dock_close,
                   turnaround_minutes=config.turnaround_minutes)

    # -- queries ------------------------------------------------------------
    def get(self, booking_id: str) -> DockBooking:
        """Return a booking by id.

        Raises:
            DockConflictError: ``TM-5003`` if the id is unknown.
        """
        try:
            return self._bookings[booking_id]
        except KeyError:
            raise DockConflictError(f"unknown booking {booking_id}", code="TM-5003") from None

    def bookings_for(self, day: date, door_id: str | None = None) -> list[DockBooking]:
        """Bookings starting on ``day`` (optionally for one door), sorted by start."""
        found = [b for b in self._bookings.values()
                 if b.start.date() == day and (door_id is None or b.door_id == door_id)]
        return sorted(found, key=lambda b: (b.start, b.door_id))

    def _conflicts(self, door_id: str, start: datetime, end: datetime) -> list[DockBooking]:
        return [b for b in self._bookings.values()
                if b.door_id == door_id and start < b.end + self.turnaround and b.start < end + self.turnaround]

    def _eligible(self, reefer: bool, hazmat: bool) -> list[DockDoor]:
        return [d for d in self.doors.values()
                if (d.reefer_capable or not reefer) and (d.hazmat_ok or not hazmat)]

    # -- mutations ----------------------------------------------------------
    def book(
        self,
        manifest_id: str,
        start: datetime,
        duration_minutes: int = 45,
        *,
        door_id: str | None = None,
        reefer: bool = False,
        hazmat: bool = False,
    ) -> DockBooking:
        """Book a door.

        Args:
            manifest_id: Manifest being loaded or unloaded.
            start: Start of the window (terminal local time).
            duration_minutes: Length of the window, default 45.
            door_id: Specific door; when ``None`` the first eligible free
                door (in the order passed to the constructor) is chosen.
            reefer: Booking needs reefer power.
            hazmat: Booking carries dangerous goods.

        Returns:
            The new :class:`DockBooking`.

        Raises:
            ValueError: If ``duration_minutes`` is not positive.
            DockConflictError: ``TM-5002`` outside operating hours,
                ``TM-5004`` if no door (or not the requested door) has the
                required capabilities, ``TM-5001`` if every eligible door is
                taken (turnaround included).
        """
        if duration_minutes <= 0:
            raise ValueError("duration_minutes must be positive")
        end = start + timedelta(minutes=duration_minutes)
        if start.time() < self.open_time or end.date() != start.date() or end.time() > self.close_time:
            raise DockConflictError(
                f"{start:%H:%M}-{end:%H:%M} is outside {self.open_time:%H:%M}-{self.close_time:%H:%M}",
                code="TM-5002",
            )
        candidates = self._eligible(reefer, hazmat)
        if door_id is not None:
            candidates = [d for d in candidates if d.door_id == door_id]
        if not candidates:
            raise DockConflictError(
                f"no door {'(' + door_id + ') ' if door_id else ''}supports reefer={reefer} hazmat={hazmat}",
                code="TM-5004",
            )
        for door in candidates:
            clashes = self._conflicts(door.door_id, start, end)
            if not clashes:
                booking_id = f"DK-{start:%Y%m%d}-{next(self._counter):04d}"
                booking = DockBooking(booking_id, door.door_id, manifest_id, start, end, reefer, hazmat)
                self._bookings[booking_id] = booking
                return booking
        raise DockConflictError(
            f"{start:%Y-%m-%d %H:%M} +{duration_minutes}min clashes on {', '.join(d.door_id for d in candidates)}",
            code="TM-5001",
            hint=f"bookings need {int(self.turnaround.total_seconds() // 60)} min turnaround; try suggest()",
        )

    def cancel(self, booking_id: str) -> DockBooking:
        """Cancel a booking and return it.

        Raises:
            DockConflictError: ``TM-5003`` if the id is unknown.
        """
        booking = self.get(booking_id)
        del self._bookings[booking_id]
        return booking

    # -- planning helpers ---------------------------------------------------
    def free_windows(self, day: date, door_id: str, min_minutes: int = 30) -> list[tuple[datetime, datetime]]:
        """Return bookable ``(start, end)`` windows on one door for a day.

        Windows already account for the turnaround gap on both sides of
        existing bookings; windows shorter than ``min_minutes`` are dropped.
        """
        cursor = datetime.combine(day, self.open_time)
        closing = datetime.combine(day, self.close_time)
        windows: list[tuple[datetime, datetime]] = []
        for booking in self.bookings_for(day, door_id):
            gap_end = booking.start - self.turnaround
            if gap_end - cursor >= timedelta(minutes=min_minutes):
                windows.append((cursor, gap_end))
            cursor = max(cursor, booking.end + self.turnaround)
        if closing - cursor >= timedelta(minutes=min_minutes):
            windows.append((cursor, closing))
        return windows

    def suggest(self, day: date, duration_minutes: int = 45, *, reefer: bool = False,
                hazmat: bool = False, not_before: datetime | None = None) -> tuple[str, datetime] | None:
        """Earliest ``(door_id, start)`` that could take a booking, or ``None``.

        Args:
            day: Day to search.
            duration_minutes: Required window length.
            reefer: Only consider reefer-capable doors.
            hazmat: Only consider hazmat doors.
            not_before: Ignore time before this moment (e.g. the truck's ETA).
        """
        best: tuple[str, datetime] | None = None
        needed = timedelta(minutes=duration_minutes)
        for door in self._eligible(reefer, hazmat):
            for start, end in self.free_windows(day, door.door_id, duration_minutes):
                if not_before is not None:
                    start = max(start, not_before)
                if end - start < needed:
                    continue
                if best is None or start < best[1]:
                    best = (door.door_id, start)
                break
        return best

    def utilisation(self, day: date) -> dict[str, float]:
        """Booked fraction of the opening hours per door (0.0-1.0)."""
        open_minutes = (datetime.combine(day, self.close_time) - datetime.combine(day, self.open_time)).total_seconds() / 60
        result: dict[str, float] = {}
        for door_id in self.doors:
            booked = sum(b.minutes for b in self.bookings_for(day, door_id))
            result[door_id] = round(booked / open_minutes, 4) if open_minutes else 0.0
        return result
