"""Append-only, hash-chained event ledger.

Every state change that matters to billing or customs (manifest sealed,
hold placed, dock booked...) is appended to the :class:`EventLedger`.  Each
event stores the SHA-256 hash of the previous event, so any edit to a
persisted ledger is detected by :meth:`EventLedger.verify`.

The on-disk format is JSON lines, one event per line, keys sorted::

    {"hash": "...", "kind": "manifest.sealed", "payload": {...},
     "prev_hash": "...", "recorded_at": "2024-06-03T08:00:00+00:00",
     "seq": 1, "subject": "BWF-2024-000123-X"}

The first event's ``prev_hash`` is :data:`GENESIS_HASH` (64 zeros).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .errors import LedgerError

if TYPE_CHECKING:  # pragma: no cover
    from .config import TidemarkConfig

__all__ = ["GENESIS_HASH", "KIND_PATTERN", "LedgerEvent", "EventLedger"]

#: ``prev_hash`` of the first event.
GENESIS_HASH: str = "0" * 64

#: Event kinds are dotted lower-case words: ``manifest.sealed``, ``dock.booked``.
KIND_PATTERN = re.compile(r"^[a-z]+(\.[a-z_]+)+$")


def _digest(seq: int, kind: str, subject: str, payload: dict[str, Any], recorded_at: str, prev_hash: str) -> str:
    body = json.dumps(
        {"seq": seq, "kind": kind, "subject": subject, "payload": payload,
         "recorded_at": recorded_at, "prev_hash": prev_hash},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LedgerEvent:
    """One immutable ledger entry."""

    seq: int
    kind: str
    subject: str
    payload: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def expected_hash(self) -> str:
        """Recompute the hash from the event's content."""
        return _digest(self.seq, self.kind, self.subject, self.payload, self.recorded_at, self.prev_hash)

    def to_json(self) -> str:
        """Serialise to one JSON line (no trailing newline)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)


class EventLedger:
    """Hash-chained event log, in memory or backed by a JSON-lines file.

    Args:
        path: File to append to; ``None`` keeps events in memory only.
        fsync: Call :func:`os.fsync` after each append (config ``ledger.fsync``).
        clock: Returns the timestamp for new events; defaults to UTC now.

    Examples:
        >>> ledger = EventLedger()
        >>> ev = ledger.append("manifest.created", "BWF-2024-000123-X", {"lines": 0})
        >>> ev.seq, ev.prev_hash == GENESIS_HASH
        (1, True)
        >>> ledger.verify()
        1
    """

    def __init__(self, path: str | Path | None = None, *, fsync: bool = False,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.fsync = fsync
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._events: list[LedgerEvent] = []

    @classmethod
    def from_config(cls, config: "TidemarkConfig") -> "EventLedger":
        """Open the ledger named by ``ledger.path`` (in memory when empty).

        An existing file is loaded and verified with :meth:`load`.
        """
        if not config.ledger_path:
            return cls(fsync=config.ledger_fsync)
        return cls.load(config.ledger_path, fsync=config.ledger_fsync)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[LedgerEvent]:
        return iter(list(self._events))

    @property
    def head_hash(self) -> str:
        """Hash of the newest event (``GENESIS_HASH`` when empty)."""
        return self._events[-1].hash if self._events else GENESIS_HASH

    def append(self, kind: str, subject: str, payload: dict[str, Any] | None = None) -> LedgerEvent:
        """Append an event and persist it if the ledger has a path.

        Args:
            kind: Dotted event kind matching :data:`KIND_PATTERN`.
            subject: What the event is about, usually a manifest id.
            payload: JSON-serialisable details.

        Raises:
            LedgerError: ``TM-8003`` if ``kind`` is malformed.
        """
        if not KIND_PATTERN.match(kind):
            raise LedgerError(f"malformed event kind {kind!r}", code="TM-8003",
                              hint="use dotted lower-case words such as 'dock.booked'")
        seq = len(self._events) + 1
        recorded_at = self._clock().isoformat()
        body = dict(payload or {})
        digest = _digest(seq, kind, subject, body, recorded_at, self.head_hash)
        event = LedgerEvent(seq, kind, subject, body, recorded_at, self.head_hash, digest)
        self._events.append(event)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(event.to_json() + "\n")
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
        return event

    def verify(self) -> int:
        """Check sequence numbers and the hash chain.

        Returns:
            Number of events verified.

        Raises:
            LedgerError: ``TM-8002`` on a sequence gap, ``TM-8001`` if a
                ``prev_hash`` or ``hash`` does not match (``context["seq"]``
                names the first bad event).
        """
        previous = GENESIS_HASH
        for index, event in enumerate(self._events, start=1):
            if event.seq != index:
                raise LedgerError(f"expected seq {index}, found {event.seq}", code="TM-8002", seq=event.seq)
            if event.prev_hash != previous or event.hash != event.expected_hash():
                raise LedgerError(f"hash chain broken at seq {event.seq}", code="TM-8001", seq=event.seq,
                                  hint="restore the ledger from the nightly snapshot; never edit it by hand")
            previous = event.hash
        return len(self._events)

    def filter(self, *, kind: str | None = None, subject: str | None = None) -> list[LedgerEvent]:
        """Events matching a kind (exact, or prefix ending in ``.*``) and/or subject."""
        def matches(event: LedgerEvent) -> bool:
            if kind is not None:
                if kind.endswith(".*"):
                    if not event.kind.startswith(kind[:-1]):
                        return False
                elif event.kind != kind:
                    return False
            return subject is None or event.subject == subject

        return [e for e in self._events if matches(e)]

    def events_for(self, subject: str) -> list[LedgerEvent]:
        """Shorthand for ``filter(subject=subject)``."""
        return self.filter(subject=subject)

    def replay(self, handler: Callable[[LedgerEvent], None], *, kinds: Iterable[str] | None = None) -> int:
        """Feed events in order to ``handler``; returns how many were replayed."""
        wanted = set(kinds) if kinds is not None else None
        count = 0
        for event in self._events:
            if wanted is None or event.kind in wanted:
                handler(event)
                count += 1
        return count

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, fsync: bool = False) -> "EventLedger":
        """Load a JSON-lines ledger; new appends go to the same file.

        Args:
            path: Ledger file. A missing file yields an empty ledger.
            verify: Run :meth:`verify` after loading (default ``True``).
            fsync: See the constructor.

        Raises:
            LedgerError: From :meth:`verify`, or ``TM-8001`` for a line that
                is not valid JSON.
        """
        ledger = cls(path, fsync=fsync)
        file = Path(path)
        if file.exists():
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    ledger._events.append(LedgerEvent(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise LedgerError(f"{file}:{number} is not a ledger event", code="TM-8001") from exc
        if verify:
            ledger.verify()
        return ledger
