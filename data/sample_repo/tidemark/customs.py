"""Customs hold codes and the hold registry.

Brackwater customs brokers use two-digit *H-codes* to flag why a container
may not leave the terminal.  Each code has a :class:`HoldRule` that lists
the documents needed to clear it and, for low-severity holds, an automatic
release period after which the hold lapses unless an officer extends it.

==========  ==================================  ========  ==================
Code        Meaning                             Severity  Auto-release
==========  ==================================  ========  ==================
``H11``     documentary discrepancy             1         48 h
``H17``     fumigation certificate required     2         never
``H23``     x-ray scan ordered                  2         never
``H31``     valuation query                     1         72 h
``H40``     dangerous goods declaration         3         never
``H52``     sanctioned-party screening          3         never
``H90``     physical inspection                 3         never
==========  ==================================  ========  ==================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING, Callable

from .errors import CustomsHoldError

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import ShipmentManifest

__all__ = [
    "HoldCode",
    "HoldRule",
    "HOLD_RULES",
    "CustomsHold",
    "HoldRegistry",
    "XRAY_THRESHOLD_KG",
    "screen_manifest",
]

#: Manifests heavier than this (gross kg) are sent to the x-ray portal (H23).
XRAY_THRESHOLD_KG: float = 24_000.0


class HoldCode(str, Enum):
    """Customs hold codes (``H``-codes)."""

    H11 = "H11"
    H17 = "H17"
    H23 = "H23"
    H31 = "H31"
    H40 = "H40"
    H52 = "H52"
    H90 = "H90"


@dataclass(frozen=True)
class HoldRule:
    """Clearance rule for a hold code.

    Attributes:
        title: Short description shown to brokers.
        severity: 1 (advisory) to 3 (blocking, needs an officer).
        clears_with: Documents that must all be attached before release.
        auto_release_hours: Hours after which :meth:`HoldRegistry.auto_release`
            lifts the hold, or ``None`` if it never lapses.
    """

    title: str
    severity: int
    clears_with: frozenset[str]
    auto_release_hours: int | None = None


#: Rule table keyed by :class:`HoldCode`.
HOLD_RULES: dict[HoldCode, HoldRule] = {
    HoldCode.H11: HoldRule("documentary discrepancy", 1, frozenset({"commercial_invoice", "packing_list"}), 48),
    HoldCode.H17: HoldRule("fumigation certificate required", 2, frozenset({"fumigation_cert"})),
    HoldCode.H23: HoldRule("x-ray scan ordered", 2, frozenset({"scan_report"})),
    HoldCode.H31: HoldRule("valuation query", 1, frozenset({"valuation_report"}), 72),
    HoldCode.H40: HoldRule("dangerous goods declaration", 3, frozenset({"hazmat_decl"})),
    HoldCode.H52: HoldRule("sanctioned-party screening", 3, frozenset({"screening_clearance"})),
    HoldCode.H90: HoldRule("physical inspection", 3, frozenset({"inspection_report", "scan_report"})),
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _code(code: HoldCode | str) -> HoldCode:
    if isinstance(code, HoldCode):
        return code
    try:
        return HoldCode(str(code).strip().upper())
    except ValueError:
        raise CustomsHoldError(
            f"unknown hold code {code!r}",
            code="TM-4001",
            hint="valid codes: " + ", ".join(c.value for c in HoldCode),
        ) from None


@dataclass
class CustomsHold:
    """One hold placed on one manifest."""

    manifest_id: str
    code: HoldCode
    placed_at: datetime
    note: str = ""
    documents: set[str] = field(default_factory=set)
    released_at: datetime | None = None
    forced: bool = False

    @property
    def rule(self) -> HoldRule:
        """The :class:`HoldRule` for :attr:`code`."""
        return HOLD_RULES[self.code]

    @property
    def is_active(self) -> bool:
        """``True`` until the hold is released."""
        return self.released_at is None

    def missing_documents(self) -> set[str]:
        """Documents still required before a normal release."""
        return set(self.rule.clears_with - self.documents)


class HoldRegistry:
    """In-memory registry of customs holds.

    Args:
        clock: Callable returning an aware ``datetime``; injectable for tests.

    Examples:
        >>> reg = HoldRegistry()
        >>> hold = reg.place("BWF-2024-000123-X", "H17")
        >>> reg.is_clear("BWF-2024-000123-X")
        False
        >>> _ = reg.attach_document("BWF-2024-000123-X", "H17", "fumigation_cert")
        >>> _ = reg.release("BWF-2024-000123-X", "H17")
        >>> reg.is_clear("BWF-2024-000123-X")
        True
    """

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or _now
        self._holds: list[CustomsHold] = []

    def place(self, manifest_id: str, code: HoldCode | str, *, at: datetime | None = None,
              note: str = "") -> CustomsHold:
        """Place a hold. Placing an already-active code again returns the existing hold.

        Raises:
            CustomsHoldError: ``TM-4001`` for an unknown code.
        """
        hold_code = _code(code)
        for hold in self.active_for(manifest_id):
            if hold.code is hold_code:
                return hold
        hold = CustomsHold(manifest_id, hold_code, at or self._clock(), note)
        self._holds.append(hold)
        return hold

    def _active(self, manifest_id: str, code: HoldCode | str) -> CustomsHold:
        hold_code = _code(code)
        for hold in self.active_for(manifest_id):
            if hold.code is hold_code:
                return hold
        raise CustomsHoldError(f"no active {hold_code.value} hold on {manifest_id}", code="TM-4003")

    def attach_document(self, manifest_id: str, code: HoldCode | str, document: str) -> CustomsHold:
        """Record a clearance document against an active hold.

        Raises:
            CustomsHoldError: ``TM-4003`` if there is no such active hold.
        """
        hold = self._active(manifest_id, code)
        hold.documents.add(document)
        return hold

    def release(self, manifest_id: str, code: HoldCode | str, *, at: datetime | None = None,
                force: bool = False) -> CustomsHold:
        """Release an active hold.

        Args:
            manifest_id: Manifest the hold belongs to.
            code: Hold code to release.
            at: Release timestamp, defaults to now.
            force: Release even if documents are missing (officer override;
                the hold is flagged ``forced=True`` for the audit trail).

        Raises:
            CustomsHoldError: ``TM-4003`` if no such active hold exists,
                ``TM-4002`` if documents are missing and ``force`` is false.
        """
        hold = self._active(manifest_id, code)
        missing = hold.missing_documents()
        if missing and not force:
            raise CustomsHoldError(
                f"{hold.code.value} on {manifest_id} still needs: {', '.join(sorted(missing))}",
                code="TM-4002",
                missing=sorted(missing),
            )
        hold.released_at = at or self._clock()
        hold.forced = bool(missing)
        return hold

    def auto_release(self, now: datetime | None = None) -> list[CustomsHold]:
        """Lift every hold whose rule's ``auto_release_hours`` has elapsed.

        Returns:
            The holds released by this call.
        """
        moment = now or self._clock()
        released: list[CustomsHold] = []
        for hold in self._holds:
            hours = hold.rule.auto_release_hours
            if hold.is_active and hours is not None and moment - hold.placed_at >= timedelta(hours=hours):
                hold.released_at = moment
                released.append(hold)
        return released

    def active_for(self, manifest_id: str) -> list[CustomsHold]:
        """Active holds of a manifest, most severe first."""
        active = [h for h in self._holds if h.manifest_id == manifest_id and h.is_active]
        return sorted(active, key=lambda h: (-h.rule.severity, h.code.value))

    def history(self, manifest_id: str) -> list[CustomsHold]:
        """Every hold ever placed on a manifest, in placement order."""
        return [h for h in self._holds if h.manifest_id == manifest_id]

    def is_clear(self, manifest_id: str) -> bool:
        """``True`` if the manifest has no active holds."""
        return not self.active_for(manifest_id)


def screen_manifest(manifest: "ShipmentManifest") -> list[HoldCode]:
    """Pre-screen a manifest and predict which holds customs will place.

    Rules (mirroring the broker desk's checklist, wiki page CUS-12):

    * any line with an empty ``hs_code`` -> ``H11``
    * any line whose HS code starts with ``44`` (wood, incl. pallets) -> ``H17``
    * total gross above :data:`XRAY_THRESHOLD_KG` -> ``H23``
    * any line with a ``hazmat_class`` -> ``H40``

    Returns:
        Sorted, de-duplicated list of predicted hold codes.
    """
    codes: set[HoldCode] = set()
    for line in manifest.lines:
        if not line.hs_code.strip():
            codes.add(HoldCode.H11)
        elif line.hs_code.startswith("44"):
            codes.add(HoldCode.H17)
        if line.hazmat_class:
            codes.add(HoldCode.H40)
    if manifest.total_gross_kg > XRAY_THRESHOLD_KG:
        codes.add(HoldCode.H23)
    return sorted(codes, key=lambda c: c.value)
