"""Carrier adapters and the carrier registry.

A carrier adapter turns a sealed :class:`~tidemark.manifest.ShipmentManifest`
into a booking with an external carrier.  Adapters register themselves with
:func:`register_carrier` under a short lower-case code and are looked up
with :func:`get_carrier`.  Three adapters ship with tidemark:

============  ======================  ======  ==========================================
Code          Carrier                 Mode    Refuses
============  ======================  ======  ==========================================
``saltmarsh`` Saltmarsh Lines         ocean   hazard class 1 (explosives)
``kestrel``   Kestrel Rail Freight    rail    reefer containers (no wagon power)
``gullwing``  Gullwing Couriers       road    manifests over 3 000 kg gross
============  ======================  ======  ==========================================

The bundled adapters are offline simulators: they never open a socket, and
they produce deterministic references so tests and examples are repeatable.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, ClassVar, TypeVar

from .errors import CarrierError
from .ledger import EventLedger
from .manifest import ManifestStatus, ShipmentManifest
from .retry import Attempt, RetryPolicy
from .units import CONTAINER_SPECS

__all__ = [
    "TrackingStatus",
    "CarrierReceipt",
    "CarrierAdapter",
    "register_carrier",
    "get_carrier",
    "available_carriers",
    "SaltmarshLines",
    "KestrelRail",
    "GullwingCourier",
    "submit_manifest",
]


class TrackingStatus(str, Enum):
    """Tracking milestones, in order."""

    ACCEPTED = "accepted"
    LOADED = "loaded"
    IN_TRANSIT = "in_transit"
    ARRIVED = "arrived"
    DELIVERED = "delivered"


_MILESTONES = list(TrackingStatus)


@dataclass(frozen=True)
class CarrierReceipt:
    """Proof that a carrier accepted a manifest."""

    carrier: str
    manifest_id: str
    reference: str
    attempts: int = 1


class CarrierAdapter(ABC):
    """Base class for carrier integrations.

    Subclasses set the class attributes :attr:`code`, :attr:`display_name`
    and :attr:`mode`, implement :meth:`_transmit`, and may override
    :meth:`check` to refuse manifests.

    Args:
        **options: Adapter specific options, stored on :attr:`options`.
    """

    code: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    mode: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = dict(options)
        self._progress: dict[str, int] = {}

    def check(self, manifest: ShipmentManifest) -> None:
        """Raise :class:`CarrierError` ``TM-7003`` if the carrier refuses the manifest."""

    @abstractmethod
    def _transmit(self, manifest: ShipmentManifest) -> str:
        """Send the manifest and return the carrier's booking reference."""

    def submit(self, manifest: ShipmentManifest) -> CarrierReceipt:
        """Submit a sealed manifest (one attempt, no retries).

        Raises:
            CarrierError: ``TM-7003`` if the manifest is not SEALED or the
                carrier refuses it; ``TM-7002``/``TM-7004`` for transient
                failures raised by :meth:`_transmit`.
        """
        if manifest.status is not ManifestStatus.SEALED:
            raise CarrierError(f"{manifest.manifest_id} must be sealed before submission "
                               f"(status {manifest.status.value})", code="TM-7003")
        self.check(manifest)
        reference = self._transmit(manifest)
        self._progress[reference] = 0
        return CarrierReceipt(self.code, manifest.manifest_id, reference)

    def track(self, reference: str) -> TrackingStatus:
        """Return the current milestone; each call advances the simulation one step.

        Raises:
            KeyError: If the reference was not issued by this adapter instance.
        """
        step = self._progress[reference]
        self._progress[reference] = min(step + 1, len(_MILESTONES) - 1)
        return _MILESTONES[step]

    @staticmethod
    def _reference(prefix: str, manifest_id: str) -> str:
        return prefix + hashlib.sha1(manifest_id.encode()).hexdigest()[:8].upper()


_REGISTRY: dict[str, type[CarrierAdapter]] = {}

A = TypeVar("A", bound=type[CarrierAdapter])


def register_carrier(cls: A) -> A:
    """Class decorator adding an adapter to the registry under ``cls.code``.

    Raises:
        ValueError: If the code is empty, not lower-case, or already taken.
    """
    code = cls.code
    if not code or code != code.lower() or not code.isidentifier():
        raise ValueError(f"carrier code {code!r} must be a lower-case identifier")
    if code in _REGISTRY and _REGISTRY[code] is not cls:
        raise ValueError(f"carrier code {code!r} already registered by {_REGISTRY[code].__name__}")
    _REGISTRY[code] = cls
    return cls


def get_carrier(code: str, **options: Any) -> CarrierAdapter:
    """Instantiate the adapter registered under ``code``.

    Raises:
        CarrierError: ``TM-7001`` if no adapter has that code.
    """
    try:
        cls = _REGISTRY[code.strip().lower()]
    except KeyError:
        raise CarrierError(f"unknown carrier {code!r}", code="TM-7001",
                           hint="known carriers: " + ", ".join(available_carriers())) from None
    return cls(**options)


def available_carriers() -> list[str]:
    """Registered carrier codes, sorted."""
    return sorted(_REGISTRY)


@register_carrier
class SaltmarshLines(CarrierAdapter):
    """Ocean feeder service between BWH and KSP. References look like ``SML-1A2B3C4D``."""

    code = "saltmarsh"
    display_name = "Saltmarsh Lines"
    mode = "ocean"

    def check(self, manifest: ShipmentManifest) -> None:
        for line in manifest.lines:
            if line.hazmat_class and line.hazmat_class.split(".")[0] == "1":
                raise CarrierError(f"Saltmarsh refuses class 1 goods ({line.sku})", code="TM-7003")

    def _transmit(self, manifest: ShipmentManifest) -> str:
        return self._reference("SML-", manifest.manifest_id)


@register_carrier
class KestrelRail(CarrierAdapter):
    """Rail shuttle to OLM.

    Options:
        fail_first (int): Number of initial submissions that fail with
            ``TM-7002`` - used to rehearse retry behaviour. Default 0.
    """

    code = "kestrel"
    display_name = "Kestrel Rail Freight"
    mode = "rail"

    def check(self, manifest: ShipmentManifest) -> None:
        if CONTAINER_SPECS[manifest.container_type].reefer:
            raise CarrierError("Kestrel wagons have no reefer power", code="TM-7003")

    def _transmit(self, manifest: ShipmentManifest) -> str:
        remaining = int(self.options.get("fail_first", 0))
        if remaining > 0:
            self.options["fail_first"] = remaining - 1
            raise CarrierError("Kestrel EDI bridge returned 503", code="TM-7002")
        return self._reference("KRF", manifest.manifest_id)


@register_carrier
class GullwingCourier(CarrierAdapter):
    """Road courier for small consignments (max 3 000 kg gross).

    Options:
        timeout_first (int): Number of initial submissions that time out
            with ``TM-7004``. Default 0.
    """

    code = "gullwing"
    display_name = "Gullwing Couriers"
    mode = "road"
    max_gross_kg: ClassVar[float] = 3000.0

    def check(self, manifest: ShipmentManifest) -> None:
        if manifest.total_gross_kg > self.max_gross_kg:
            raise CarrierError(f"Gullwing limit is {self.max_gross_kg:.0f} kg", code="TM-7003")

    def _transmit(self, manifest: ShipmentManifest) -> str:
        remaining = int(self.options.get("timeout_first", 0))
        if remaining > 0:
            self.options["timeout_first"] = remaining - 1
            raise CarrierError("Gullwing API did not answer within 10 s", code="TM-7004")
        return self._reference("GW-", manifest.manifest_id)


def submit_manifest(
    manifest: ShipmentManifest,
    *,
    adapter: CarrierAdapter | None = None,
    policy: RetryPolicy | None = None,
    ledger: EventLedger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CarrierReceipt:
    """Submit a sealed manifest with retries and ledger bookkeeping.

    Args:
        manifest: A SEALED manifest.
        adapter: Adapter to use; defaults to ``get_carrier(manifest.carrier)``.
        policy: Retry policy; defaults to ``RetryPolicy()``.
        ledger: If given, a ``carrier.retry`` event is appended for every
            retried attempt and ``manifest.submitted`` on success.
        sleep: Sleep function forwarded to :meth:`RetryPolicy.call`.

    Returns:
        A :class:`CarrierReceipt` whose ``attempts`` counts every try.
        The manifest's status becomes ``SUBMITTED``.

    Raises:
        CarrierError: ``TM-7001`` unknown carrier, ``TM-7003`` refusal.
        RetryExhaustedError: ``TM-9001`` if transient errors persist.
    """
    active = adapter or get_carrier(manifest.carrier)
    retries: list[Attempt] = []

    def note_retry(attempt: Attempt) -> None:
        retries.append(attempt)
        if ledger is not None:
            ledger.append("carrier.retry", manifest.manifest_id,
                          {"carrier": active.code, "attempt": attempt.number,
                           "error_code": attempt.error_code, "delay_s": round(attempt.delay_s, 3)})

    receipt = (policy or RetryPolicy()).call(lambda: active.submit(manifest), sleep=sleep, on_retry=note_retry)
    receipt = CarrierReceipt(receipt.carrier, receipt.manifest_id, receipt.reference, attempts=len(retries) + 1)
    manifest.status = ManifestStatus.SUBMITTED
    if ledger is not None:
        ledger.append("manifest.submitted", manifest.manifest_id,
                      {"carrier": active.code, "reference": receipt.reference, "attempts": receipt.attempts})
    return receipt
