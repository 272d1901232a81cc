"""Shipment manifests.

A :class:`ShipmentManifest` describes the cargo of one container moving on
one lane.  Its life cycle is::

    DRAFT --seal_with()--> SEALED --submit (carrier)--> SUBMITTED
                              |                            |
                              +----- customs hold -----> HELD --release--> RELEASED

Only ``DRAFT`` manifests accept new lines.  Sealing validates the whole
manifest (lines present, payload within the container limit, seal format).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any

from .errors import IdentifierError, ManifestError
from .ids import IdSequence, validate_container_number, validate_seal
from .ratecard import Quote, RateCard, ServiceLevel
from .units import CONTAINER_SPECS, DEFAULT_VOLUMETRIC_DIVISOR, ContainerType, Dimensions, chargeable_kg

__all__ = ["ManifestStatus", "ManifestLine", "ManifestIssue", "ShipmentManifest", "new_manifest"]


class ManifestStatus(str, Enum):
    """Life-cycle states of a manifest."""

    DRAFT = "draft"
    SEALED = "sealed"
    SUBMITTED = "submitted"
    HELD = "held"
    RELEASED = "released"


@dataclass
class ManifestLine:
    """One SKU on a manifest.

    Attributes:
        sku: Shipper's stock keeping unit; unique per manifest.
        description: Free-text cargo description used by customs.
        quantity: Number of packages (must be >= 1).
        gross_kg: Gross weight of *all* packages of this line in kg.
        dims: Dimensions of a single package, optional.
        hs_code: Harmonized System code (6-10 digits), may be empty in DRAFT.
        hazmat_class: UN hazard class such as ``"3"`` or ``"1.4"``; ``None``
            for non-dangerous goods.
    """

    sku: str
    description: str
    quantity: int
    gross_kg: float
    dims: Dimensions | None = None
    hs_code: str = ""
    hazmat_class: str | None = None

    def chargeable_kg(self, divisor: int = DEFAULT_VOLUMETRIC_DIVISOR) -> float:
        """Chargeable weight of the whole line (volumetric x quantity vs gross)."""
        if self.dims is None:
            return chargeable_kg(self.gross_kg, None, divisor)
        volumetric = self.dims.volumetric_kg(divisor) * self.quantity
        return chargeable_kg(max(self.gross_kg, volumetric), None, divisor)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        data: dict[str, Any] = {
            "sku": self.sku,
            "description": self.description,
            "quantity": self.quantity,
            "gross_kg": self.gross_kg,
            "hs_code": self.hs_code,
            "hazmat_class": self.hazmat_class,
        }
        if self.dims is not None:
            data["dims"] = [self.dims.length_cm, self.dims.width_cm, self.dims.height_cm]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ManifestLine":
        """Inverse of :meth:`to_dict`."""
        dims = data.get("dims")
        return cls(
            sku=data["sku"],
            description=data.get("description", ""),
            quantity=int(data.get("quantity", 1)),
            gross_kg=float(data["gross_kg"]),
            dims=Dimensions(*dims) if dims else None,
            hs_code=data.get("hs_code", ""),
            hazmat_class=data.get("hazmat_class"),
        )


@dataclass(frozen=True)
class ManifestIssue:
    """A problem found by :meth:`ShipmentManifest.problems`."""

    code: str
    message: str


@dataclass
class ShipmentManifest:
    """Cargo manifest for one container on one lane.

    Args:
        manifest_id: Id in ``BWF-YYYY-NNNNNN-C`` format.
        origin: Origin port code (``"BWH"``).
        destination: Destination port code (``"KSP"``).
        carrier: Carrier code (see :mod:`tidemark.carriers`), default ``"saltmarsh"``.
        container_type: Box type, default :attr:`ContainerType.G40`.
        container_number: ISO 6346 number; optional until submission.
        service: Service level used for quoting.
    """

    manifest_id: str
    origin: str
    destination: str
    carrier: str = "saltmarsh"
    container_type: ContainerType = ContainerType.G40
    container_number: str | None = None
    service: ServiceLevel = ServiceLevel.STANDARD
    lines: list[ManifestLine] = field(default_factory=list)
    seal: str | None = None
    status: ManifestStatus = ManifestStatus.DRAFT
    max_lines: int = 400

    def __post_init__(self) -> None:
        self.container_type = ContainerType(self.container_type)
        self.service = ServiceLevel(self.service)
        self.status = ManifestStatus(self.status)
        if self.container_number:
            self.container_number = validate_container_number(self.container_number)

    # -- contents ---------------------------------------------------------
    def add_line(self, line: ManifestLine) -> "ShipmentManifest":
        """Append a line and return ``self`` so calls can be chained.

        Raises:
            ManifestError: ``TM-2005`` if the manifest is not DRAFT,
                ``TM-2002`` for a non-positive quantity/weight or too many
                lines, ``TM-2004`` for a duplicate SKU and ``TM-2003`` if the
                container payload would be exceeded.
        """
        if self.status is not ManifestStatus.DRAFT:
            raise ManifestError(f"{self.manifest_id} is {self.status.value}", code="TM-2005")
        if line.quantity < 1 or line.gross_kg <= 0 or not line.sku.strip():
            raise ManifestError(f"invalid line {line.sku!r}", code="TM-2002", sku=line.sku)
        if len(self.lines) >= self.max_lines:
            raise ManifestError(f"{self.manifest_id} already has {self.max_lines} lines", code="TM-2002")
        if any(existing.sku == line.sku for existing in self.lines):
            raise ManifestError(f"duplicate SKU {line.sku} on {self.manifest_id}", code="TM-2004", sku=line.sku)
        limit = CONTAINER_SPECS[self.container_type].max_payload_kg
        if self.total_gross_kg + line.gross_kg > limit:
            raise ManifestError(
                f"{self.manifest_id}: {self.total_gross_kg + line.gross_kg:.1f} kg exceeds "
                f"{self.container_type.value} payload of {limit:.0f} kg",
                code="TM-2003",
            )
        self.lines.append(line)
        return self

    @property
    def total_gross_kg(self) -> float:
        """Sum of ``gross_kg`` over all lines."""
        return sum(line.gross_kg for line in self.lines)

    @property
    def total_packages(self) -> int:
        """Sum of ``quantity`` over all lines."""
        return sum(line.quantity for line in self.lines)

    @property
    def has_hazmat(self) -> bool:
        """``True`` if any line declares a hazard class."""
        return any(line.hazmat_class for line in self.lines)

    def total_chargeable_kg(self, divisor: int = DEFAULT_VOLUMETRIC_DIVISOR) -> float:
        """Sum of per-line chargeable weights."""
        return sum(line.chargeable_kg(divisor) for line in self.lines)

    # -- validation -------------------------------------------------------
    def problems(self, *, strict_seals: bool = True) -> list[ManifestIssue]:
        """Return every validation problem instead of raising on the first.

        Checks: lines present (``TM-2001``), payload (``TM-2003``), container
        number (``TM-0101``) and seal format (``TM-0103``, only if a seal is set).
        """
        issues: list[ManifestIssue] = []
        if not self.lines:
            issues.append(ManifestIssue("TM-2001", "manifest has no lines"))
        limit = CONTAINER_SPECS[self.container_type].max_payload_kg
        if self.total_gross_kg > limit:
            issues.append(ManifestIssue("TM-2003", f"gross {self.total_gross_kg:.1f} kg > payload {limit:.0f} kg"))
        if self.container_number:
            try:
                validate_container_number(self.container_number)
            except IdentifierError as exc:
                issues.append(ManifestIssue(exc.code, exc.message))
        if self.seal:
            try:
                validate_seal(self.seal, strict=strict_seals)
            except IdentifierError as exc:
                issues.append(ManifestIssue(exc.code, exc.message))
        return issues

    def seal_with(self, seal: str, *, strict: bool = True) -> None:
        """Validate the manifest, record the seal and move to ``SEALED``.

        Args:
            seal: Bolt seal number.
            strict: Seal strictness, see :func:`tidemark.ids.validate_seal`.

        Raises:
            ManifestError: ``TM-2005`` if not DRAFT, ``TM-2001`` if empty.
            IdentifierError: ``TM-0103`` if the seal is rejected.
        """
        if self.status is not ManifestStatus.DRAFT:
            raise ManifestError(f"{self.manifest_id} is already {self.status.value}", code="TM-2005")
        if not self.lines:
            raise ManifestError(f"{self.manifest_id} has no lines", code="TM-2001")
        self.seal = validate_seal(seal, strict=strict)
        self.status = ManifestStatus.SEALED

    def quote(self, card: RateCard, *, bunker_index: float = 1.0, divisor: int = DEFAULT_VOLUMETRIC_DIVISOR,
              on_date: date | None = None) -> Quote:
        """Price the manifest on ``card`` using its total chargeable weight.

        Raises:
            ManifestError: ``TM-2001`` if the manifest has no lines.
            RateCardError: see :meth:`tidemark.ratecard.RateCard.quote`.
        """
        if not self.lines:
            raise ManifestError(f"{self.manifest_id} has no lines to quote", code="TM-2001")
        return card.quote(self.origin, self.destination, self.total_chargeable_kg(divisor),
                          service=self.service, bunker_index=bunker_index, on_date=on_date)

    # -- serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Serialise to the JSON layout accepted by ``tidemark validate``."""
        return {
            "manifest_id": self.manifest_id,
            "origin": self.origin,
            "destination": self.destination,
            "carrier": self.carrier,
            "container_type": self.container_type.value,
            "container_number": self.container_number,
            "service": self.service.value,
            "seal": self.seal,
            "status": self.status.value,
            "lines": [line.to_dict() for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_carrier: str = "saltmarsh") -> "ShipmentManifest":
        """Build a manifest from :meth:`to_dict` output.

        Args:
            data: Parsed JSON.
            default_carrier: Carrier used when ``data`` has no ``carrier``
                key (the CLI passes config key ``carriers.default``).

        Lines are attached directly (not through :meth:`add_line`) so that a
        broken manifest can still be loaded and inspected with :meth:`problems`.
        """
        manifest = cls(
            manifest_id=data["manifest_id"],
            origin=data["origin"],
            destination=data["destination"],
            carrier=data.get("carrier") or default_carrier,
            container_type=ContainerType(data.get("container_type", "40GP")),
            container_number=None,
            service=ServiceLevel(data.get("service", "standard")),
            seal=data.get("seal"),
            status=ManifestStatus(data.get("status", "draft")),
        )
        manifest.container_number = data.get("container_number")
        manifest.lines = [ManifestLine.from_dict(line) for line in data.get("lines", [])]
        return manifest


def new_manifest(
    origin: str,
    destination: str,
    *,
    sequence: IdSequence | None = None,
    **kwargs: Any,
) -> ShipmentManifest:
    """Create a DRAFT manifest with a freshly allocated id.

    Args:
        origin: Origin port code.
        destination: Destination port code.
        sequence: Id generator; a module-level sequence for the current year
            is used when omitted.
        **kwargs: Forwarded to :class:`ShipmentManifest` (``carrier``,
            ``container_type``, ``container_number``, ``service``, ``max_lines``).

    Examples:
        >>> m = new_manifest("BWH", "KSP", sequence=IdSequence(2024, 7))
        >>> m.manifest_id, m.status.value
        ('BWF-2024-000007-C', 'draft')
    """
    seq = sequence or _DEFAULT_SEQUENCE
    return ShipmentManifest(manifest_id=seq.next_id(), origin=origin.upper(), destination=destination.upper(), **kwargs)


_DEFAULT_SEQUENCE = IdSequence()
