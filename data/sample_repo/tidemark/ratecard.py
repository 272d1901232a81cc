"""Rate cards and freight quotes.

A :class:`RateCard` holds, for each *lane* (``"BWH>KSP"``: origin port code,
``>``, destination port code), a list of contiguous weight bands.  Each
band has a per-kilogram rate and a minimum charge.  A quote is computed as::

    base    = max(per_kg * chargeable_kg, minimum_charge)
    bunker  = base * card.bunker_factor * bunker_index
    total   = (base + bunker) * SERVICE_MULTIPLIERS[service]

Every amount is a :class:`~decimal.Decimal` rounded half-up to cents.
Port codes used by Brackwater: ``BWH`` (Brackwater Harbour), ``KSP``
(Kessock Point), ``OLM`` (Olmstead rail yard) and ``FRN`` (Farrow Nook).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import RateCardError

__all__ = [
    "ServiceLevel",
    "SERVICE_MULTIPLIERS",
    "RateBand",
    "Quote",
    "RateCard",
    "lane_key",
    "default_rate_card",
    "load_rate_card",
]

CENT = Decimal("0.01")


class ServiceLevel(str, Enum):
    """Service levels sold by Brackwater."""

    STANDARD = "standard"
    EXPEDITED = "expedited"
    DEFERRED = "deferred"


#: Multiplier applied to ``base + bunker`` for each service level.
SERVICE_MULTIPLIERS: dict[ServiceLevel, Decimal] = {
    ServiceLevel.STANDARD: Decimal("1.00"),
    ServiceLevel.EXPEDITED: Decimal("1.35"),
    ServiceLevel.DEFERRED: Decimal("0.85"),
}


def lane_key(origin: str, destination: str) -> str:
    """Return the canonical lane key.

    Examples:
        >>> lane_key("bwh", " ksp")
        'BWH>KSP'
    """
    return f"{origin.strip().upper()}>{destination.strip().upper()}"


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class RateBand:
    """One weight band of a lane.

    Attributes:
        min_kg: Inclusive lower bound in kilograms.
        max_kg: Exclusive upper bound, or ``None`` for the open top band.
        per_kg: Rate per chargeable kilogram.
        minimum_charge: Floor applied to ``per_kg * kg``.
    """

    min_kg: float
    max_kg: float | None
    per_kg: Decimal
    minimum_charge: Decimal = Decimal("0")

    def contains(self, kg: float) -> bool:
        """Return ``True`` if ``min_kg <= kg < max_kg``."""
        return kg >= self.min_kg and (self.max_kg is None or kg < self.max_kg)


@dataclass(frozen=True)
class Quote:
    """Result of :meth:`RateCard.quote`.

    Attributes:
        card_id: Id of the card that produced the quote.
        lane: Lane key, e.g. ``"BWH>KSP"``.
        chargeable_kg: Weight that was priced.
        base: Band charge after the minimum charge.
        bunker: Bunker (fuel) adjustment.
        service: Service level.
        total: Amount payable.
        currency: ISO currency code.
    """

    card_id: str
    lane: str
    chargeable_kg: float
    base: Decimal
    bunker: Decimal
    service: ServiceLevel
    total: Decimal
    currency: str

    @property
    def service_charge(self) -> Decimal:
        """Difference caused by the service multiplier (negative for deferred)."""
        return self.total - self.base - self.bunker

    def to_dict(self) -> dict[str, Any]:
        """Serialise with amounts as strings (JSON safe, no float drift)."""
        return {
            "card_id": self.card_id,
            "lane": self.lane,
            "chargeable_kg": self.chargeable_kg,
            "base": str(self.base),
            "bunker": str(self.bunker),
            "service": self.service.value,
            "service_charge": str(self.service_charge),
            "total": str(self.total),
            "currency": self.currency,
        }


@dataclass
class RateCard:
    """A dated tariff with per-lane weight bands.

    Args:
        card_id: Tariff identifier, e.g. ``"BW-STD-2024"``.
        currency: ISO currency code of every amount on the card.
        valid_from: First day the card may be used (inclusive).
        valid_until: Last day the card may be used (inclusive).
        bunker_factor: Fraction of the base charged as bunker adjustment
            (default ``Decimal("0.08")``, i.e. 8 %).
    """

    card_id: str
    currency: str = "EUR"
    valid_from: date = date(2024, 1, 1)
    valid_until: date = date(2031, 12, 31)
    bunker_factor: Decimal = Decimal("0.08")
    lanes: dict[str, list[RateBand]] = field(default_factory=dict)

    def add_lane(self, origin: str, destination: str, bands: list[RateBand]) -> None:
        """Register the bands of a lane, replacing any existing ones.

        Bands are sorted by ``min_kg``; the first must start at 0, each must
        start where the previous ended and only the last may be open-ended.

        Raises:
            RateCardError: ``TM-3002`` if the bands overlap or leave a gap.
        """
        ordered = sorted(bands, key=lambda b: b.min_kg)
        key = lane_key(origin, destination)
        if not ordered or ordered[0].min_kg != 0:
            raise RateCardError(f"lane {key}: first band must start at 0 kg", code="TM-3002", lane=key)
        for prev, cur in zip(ordered, ordered[1:]):
            if prev.max_kg is None or prev.max_kg != cur.min_kg:
                raise RateCardError(
                    f"lane {key}: band {prev.min_kg}-{prev.max_kg} does not meet band starting {cur.min_kg}",
                    code="TM-3002",
                    lane=key,
                )
        self.lanes[key] = ordered

    def band_for(self, origin: str, destination: str, kg: float) -> RateBand:
        """Return the band that prices ``kg`` on a lane.

        Raises:
            RateCardError: ``TM-3001`` if the lane is not on the card or no
                band covers the weight.
        """
        key = lane_key(origin, destination)
        for band in self.lanes.get(key, []):
            if band.contains(kg):
                return band
        raise RateCardError(
            f"card {self.card_id} has no band for {kg} kg on lane {key}",
            code="TM-3001",
            lane=key,
            hint=f"lanes on this card: {', '.join(sorted(self.lanes)) or 'none'}",
        )

    def quote(
        self,
        origin: str,
        destination: str,
        chargeable_kg: float,
        *,
        service: ServiceLevel | str = ServiceLevel.STANDARD,
        bunker_index: float = 1.0,
        on_date: date | None = None,
    ) -> Quote:
        """Price a consignment.

        Args:
            origin: Origin port code.
            destination: Destination port code.
            chargeable_kg: Chargeable weight (see :func:`tidemark.units.chargeable_kg`).
            service: Service level or its string value.
            bunker_index: Multiplier on :attr:`bunker_factor` published weekly
                by the fuel desk (config key ``rates.bunker_index``).
            on_date: Date the quote is valid for; defaults to today.

        Returns:
            A :class:`Quote`.

        Raises:
            RateCardError: ``TM-3003`` if the card is not valid on
                ``on_date``; ``TM-3001`` if the lane/weight is not covered.
            ValueError: If ``chargeable_kg`` is negative.

        Examples:
            >>> card = default_rate_card()
            >>> q = card.quote("BWH", "KSP", 1200, on_date=date(2024, 6, 3))
            >>> str(q.total)
            '920.16'
        """
        if chargeable_kg < 0:
            raise ValueError("chargeable_kg must not be negative")
        when = on_date or date.today()
        if not self.valid_from <= when <= self.valid_until:
            raise RateCardError(
                f"card {self.card_id} is valid {self.valid_from}..{self.valid_until}, not on {when}",
                code="TM-3003",
            )
        level = ServiceLevel(service)
        band = self.band_for(origin, destination, chargeable_kg)
        base = _money(max(band.per_kg * Decimal(str(chargeable_kg)), band.minimum_charge))
        bunker = _money(base * self.bunker_factor * Decimal(str(bunker_index)))
        total = _money((base + bunker) * SERVICE_MULTIPLIERS[level])
        return Quote(self.card_id, lane_key(origin, destination), chargeable_kg, base, bunker, level, total, self.currency)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to the JSON layout read by :meth:`from_dict`."""
        return {
            "card_id": self.card_id,
            "currency": self.currency,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "bunker_factor": str(self.bunker_factor),
            "lanes": {
                key: [
                    {"min_kg": b.min_kg, "max_kg": b.max_kg, "per_kg": str(b.per_kg), "minimum_charge": str(b.minimum_charge)}
                    for b in bands
                ]
                for key, bands in self.lanes.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RateCard":
        """Build a card from :meth:`to_dict` output.

        Raises:
            RateCardError: ``TM-3002`` for inconsistent bands.
            KeyError: If ``card_id`` or ``lanes`` is missing.
        """
        card = cls(
            card_id=data["card_id"],
            currency=data.get("currency", "EUR"),
            valid_from=date.fromisoformat(data.get("valid_from", "2024-01-01")),
            valid_until=date.fromisoformat(data.get("valid_until", "2031-12-31")),
            bunker_factor=Decimal(str(data.get("bunker_factor", "0.08"))),
        )
        for key, bands in data["lanes"].items():
            origin, _, destination = key.partition(">")
            card.add_lane(
                origin,
                destination,
                [
                    RateBand(
                        float(b["min_kg"]),
                        None if b.get("max_kg") is None else float(b["max_kg"]),
                        Decimal(str(b["per_kg"])),
                        Decimal(str(b.get("minimum_charge", "0"))),
                    )
                    for b in bands
                ],
            )
        return card


def _bands(*rows: tuple[float, float | None, str, str]) -> list[RateBand]:
    return [RateBand(lo, hi, Decimal(rate), Decimal(minimum)) for lo, hi, rate, minimum in rows]


def default_rate_card() -> RateCard:
    """Return the standing tariff ``BW-STD-2024`` shipped with tidemark.

    Lanes: ``BWH>KSP``, ``KSP>BWH``, ``BWH>OLM`` and ``BWH>FRN``. Valid
    2024-01-01 to 2031-12-31, bunker factor 8 %, currency EUR.
    """
    card = RateCard(card_id="BW-STD-2024")
    card.add_lane("BWH", "KSP", _bands((0, 500, "0.92", "45.00"), (500, 5000, "0.71", "0"), (5000, None, "0.58", "0")))
    card.add_lane("KSP", "BWH", _bands((0, 500, "0.95", "45.00"), (500, 5000, "0.74", "0"), (5000, None, "0.60", "0")))
    card.add_lane("BWH", "OLM", _bands((0, 500, "1.10", "55.00"), (500, 5000, "0.86", "0"), (5000, None, "0.69", "0")))
    card.add_lane("BWH", "FRN", _bands((0, 1000, "1.45", "80.00"), (1000, None, "1.12", "0")))
    return card


def load_rate_card(path: str | Path) -> RateCard:
    """Read a rate card from a JSON file written with :meth:`RateCard.to_dict`."""
    with open(path, encoding="utf-8") as handle:
        return RateCard.from_dict(json.load(handle))
