"""Weights, dimensions and container specifications.

Brackwater Freight prices on *chargeable weight*: the larger of the gross
weight and the volumetric weight of a consignment.  Volumetric weight is the
volume in cubic centimetres divided by the **Brackwater divisor**, which is
``4800`` by default (most public carriers use 5000 or 6000; our lower divisor
was negotiated with the harbour authority in 2019, see ticket FRT-1187).

Chargeable weight is always rounded *up* to the next half kilogram.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

__all__ = [
    "DEFAULT_VOLUMETRIC_DIVISOR",
    "KG_PER_LB",
    "WeightUnit",
    "Dimensions",
    "ContainerType",
    "ContainerSpec",
    "CONTAINER_SPECS",
    "to_kg",
    "parse_weight",
    "chargeable_kg",
    "teu_count",
]

#: Divisor used to convert cm³ to volumetric kilograms.
DEFAULT_VOLUMETRIC_DIVISOR: int = 4800

#: Exact pounds-to-kilograms factor.
KG_PER_LB: float = 0.45359237


class WeightUnit(str, Enum):
    """Units accepted by :func:`to_kg` and :func:`parse_weight`."""

    KG = "kg"
    LB = "lb"
    TONNE = "t"


_FACTORS: dict[WeightUnit, float] = {
    WeightUnit.KG: 1.0,
    WeightUnit.LB: KG_PER_LB,
    WeightUnit.TONNE: 1000.0,
}


def to_kg(value: float, unit: WeightUnit | str = WeightUnit.KG) -> float:
    """Convert a weight to kilograms.

    Args:
        value: The numeric weight. Must not be negative.
        unit: A :class:`WeightUnit` or its string value (``"kg"``, ``"lb"``,
            ``"t"``).

    Returns:
        The weight in kilograms.

    Raises:
        ValueError: If ``value`` is negative or ``unit`` is unknown.

    Examples:
        >>> to_kg(2, "t")
        2000.0
        >>> round(to_kg(100, "lb"), 3)
        45.359
    """
    if value < 0:
        raise ValueError(f"weight must not be negative: {value}")
    return float(value) * _FACTORS[WeightUnit(unit)]


_WEIGHT_RE = re.compile(r"^\s*([0-9][0-9,_]*(?:\.[0-9]+)?)\s*(kg|lb|lbs|t)?\s*$", re.IGNORECASE)


def parse_weight(text: str) -> float:
    """Parse a weight string such as ``"1,200 kg"`` or ``"3.5t"``.

    A missing unit means kilograms. ``"lbs"`` is accepted as an alias of
    ``"lb"``. Thousands separators (``,`` and ``_``) are ignored.

    Args:
        text: The weight as typed by a dock clerk.

    Returns:
        The weight in kilograms.

    Raises:
        ValueError: If the string cannot be parsed.

    Examples:
        >>> parse_weight("1,200 kg")
        1200.0
        >>> parse_weight("3.5t")
        3500.0
    """
    match = _WEIGHT_RE.match(text)
    if not match:
        raise ValueError(f"cannot parse weight: {text!r}")
    number = float(match.group(1).replace(",", "").replace("_", ""))
    unit = (match.group(2) or "kg").lower()
    if unit == "lbs":
        unit = "lb"
    return to_kg(number, unit)


@dataclass(frozen=True)
class Dimensions:
    """Outer dimensions of a package in centimetres.

    Args:
        length_cm: Length in centimetres.
        width_cm: Width in centimetres.
        height_cm: Height in centimetres.

    Raises:
        ValueError: If any dimension is not strictly positive.
    """

    length_cm: float
    width_cm: float
    height_cm: float

    def __post_init__(self) -> None:
        for name in ("length_cm", "width_cm", "height_cm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def volume_cm3(self) -> float:
        """Volume in cubic centimetres."""
        return self.length_cm * self.width_cm * self.height_cm

    @property
    def volume_m3(self) -> float:
        """Volume in cubic metres."""
        return self.volume_cm3 / 1_000_000

    def volumetric_kg(self, divisor: int = DEFAULT_VOLUMETRIC_DIVISOR) -> float:
        """Volumetric weight in kilograms (``volume_cm3 / divisor``).

        Examples:
            >>> Dimensions(120, 80, 100).volumetric_kg()
            200.0
        """
        if divisor <= 0:
            raise ValueError("divisor must be positive")
        return self.volume_cm3 / divisor


def chargeable_kg(
    gross_kg: float,
    dims: Dimensions | None = None,
    divisor: int = DEFAULT_VOLUMETRIC_DIVISOR,
) -> float:
    """Return the chargeable weight, rounded up to the next 0.5 kg.

    Args:
        gross_kg: Measured gross weight in kilograms.
        dims: Package dimensions; ``None`` means "price on gross weight".
        divisor: Volumetric divisor, defaults to the Brackwater divisor 4800.

    Returns:
        ``max(gross_kg, dims.volumetric_kg(divisor))`` rounded up to 0.5 kg.

    Examples:
        >>> chargeable_kg(180.2, Dimensions(120, 80, 100))
        200.0
        >>> chargeable_kg(10.1)
        10.5
    """
    weight = gross_kg
    if dims is not None:
        weight = max(weight, dims.volumetric_kg(divisor))
    return math.ceil(weight * 2 - 1e-9) / 2


class ContainerType(str, Enum):
    """ISO size/type groups handled at Brackwater terminals."""

    G20 = "20GP"
    G40 = "40GP"
    HC40 = "40HC"
    RF20 = "20RF"
    RF40 = "40RF"
    FR40 = "40FR"


@dataclass(frozen=True)
class ContainerSpec:
    """Static limits for a :class:`ContainerType`.

    Attributes:
        tare_kg: Empty weight of the box.
        max_gross_kg: Maximum gross mass (box + cargo).
        teu: Twenty-foot equivalent units.
        reefer: ``True`` if the box needs a powered reefer plug.
    """

    tare_kg: float
    max_gross_kg: float
    teu: float
    reefer: bool = False

    @property
    def max_payload_kg(self) -> float:
        """Maximum cargo weight: ``max_gross_kg - tare_kg``."""
        return self.max_gross_kg - self.tare_kg


#: Specifications used for payload checks and slotting.
CONTAINER_SPECS: dict[ContainerType, ContainerSpec] = {
    ContainerType.G20: ContainerSpec(tare_kg=2230, max_gross_kg=30480, teu=1.0),
    ContainerType.G40: ContainerSpec(tare_kg=3750, max_gross_kg=30480, teu=2.0),
    ContainerType.HC40: ContainerSpec(tare_kg=3940, max_gross_kg=30480, teu=2.0),
    ContainerType.RF20: ContainerSpec(tare_kg=3080, max_gross_kg=30480, teu=1.0, reefer=True),
    ContainerType.RF40: ContainerSpec(tare_kg=4800, max_gross_kg=34000, teu=2.0, reefer=True),
    ContainerType.FR40: ContainerSpec(tare_kg=5000, max_gross_kg=45000, teu=2.0),
}


def teu_count(types: Iterable[ContainerType | str]) -> float:
    """Sum the TEU of a collection of container types.

    Examples:
        >>> teu_count(["20GP", "40HC", ContainerType.RF20])
        4.0
    """
    return sum(CONTAINER_SPECS[ContainerType(t)].teu for t in types)
