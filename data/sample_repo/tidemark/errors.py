"""Exception hierarchy and error-code catalogue for :mod:`tidemark`.

Every exception raised deliberately by tidemark derives from
:class:`TidemarkError` and carries a stable error code of the form
``TM-NNNN``.  The first digit after the dash identifies the subsystem:

===========  ===========================
Prefix       Subsystem
===========  ===========================
``TM-01xx``  identifiers (container numbers, manifest ids, seals)
``TM-1xxx``  configuration
``TM-2xxx``  shipment manifests
``TM-3xxx``  rate cards and quoting
``TM-4xxx``  customs holds
``TM-5xxx``  dock scheduling
``TM-6xxx``  yard slotting
``TM-7xxx``  carrier adapters
``TM-8xxx``  event ledger
``TM-9xxx``  retry machinery
===========  ===========================

Codes are part of the public contract: dashboards and the on-call runbook
match on them, so a code is never reused for a different meaning.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_CATALOG",
    "RETRYABLE_CODES",
    "TidemarkError",
    "IdentifierError",
    "ConfigError",
    "ManifestError",
    "RateCardError",
    "CustomsHoldError",
    "DockConflictError",
    "SlottingError",
    "CarrierError",
    "LedgerError",
    "RetryExhaustedError",
    "describe_error",
]

#: Short, human readable description of every error code tidemark can raise.
ERROR_CATALOG: dict[str, str] = {
    "TM-0000": "Unclassified tidemark error.",
    "TM-0101": "Container number is malformed or fails the ISO 6346 check digit.",
    "TM-0102": "Manifest id is malformed or its check letter does not match.",
    "TM-0103": "Seal number does not match the required pattern.",
    "TM-1001": "Unknown configuration key.",
    "TM-1002": "Configuration value has the wrong type or is out of range.",
    "TM-1003": "Configuration file could not be read or is not valid TOML.",
    "TM-2001": "Manifest has no lines.",
    "TM-2002": "Manifest line is invalid (quantity, weight or SKU).",
    "TM-2003": "Manifest gross weight exceeds the container payload.",
    "TM-2004": "Duplicate SKU on the same manifest.",
    "TM-2005": "Manifest is not in DRAFT status and cannot be modified.",
    "TM-3001": "No rate bands exist for the requested lane.",
    "TM-3002": "Rate bands overlap or leave a gap.",
    "TM-3003": "Rate card is not valid on the requested date.",
    "TM-3004": "Rate card currency differs from the configured currency.",
    "TM-4001": "Unknown customs hold code.",
    "TM-4002": "Hold cannot be released: clearance documents are missing.",
    "TM-4003": "No active hold with that code exists for the manifest.",
    "TM-5001": "Dock window conflicts with an existing booking.",
    "TM-5002": "Dock window falls outside operating hours.",
    "TM-5003": "Unknown dock booking id.",
    "TM-5004": "No dock door satisfies the booking requirements.",
    "TM-6001": "No yard slot is available for the container.",
    "TM-6002": "Stacking would violate the heavy-low weight rule.",
    "TM-6003": "Reefer container needs a powered (reefer) row.",
    "TM-6004": "Container is buried under other containers.",
    "TM-6005": "Container is not present in the yard.",
    "TM-7001": "Unknown carrier code.",
    "TM-7002": "Carrier endpoint is temporarily unavailable.",
    "TM-7003": "Carrier rejected the manifest.",
    "TM-7004": "Carrier call timed out.",
    "TM-8001": "Ledger hash chain is broken.",
    "TM-8002": "Ledger sequence numbers have a gap or are out of order.",
    "TM-8003": "Ledger event kind is malformed.",
    "TM-9001": "Retry attempts exhausted.",
}

#: Error codes that a :class:`~tidemark.retry.RetryPolicy` retries by default.
RETRYABLE_CODES: frozenset[str] = frozenset({"TM-7002", "TM-7004"})


class TidemarkError(Exception):
    """Base class for every tidemark exception.

    Args:
        message: Human readable explanation of what went wrong.
        code: Error code overriding the class default (``TM-NNNN``).
        hint: Optional suggestion printed by the CLI under the message.
        **context: Arbitrary structured context (manifest id, door id, ...)
            that is kept on :attr:`context` and included in :meth:`to_dict`.

    Examples:
        >>> err = TidemarkError("boom", code="TM-7002", carrier="kestrel")
        >>> str(err)
        '[TM-7002] boom'
        >>> err.retryable
        True
    """

    default_code: str = "TM-0000"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.hint = hint
        self.context: dict[str, Any] = dict(context)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    @property
    def retryable(self) -> bool:
        """Whether the error code is in :data:`RETRYABLE_CODES`."""
        return self.code in RETRYABLE_CODES

    def to_dict(self) -> dict[str, Any]:
        """Serialise the error for logs and the gateway's error envelope.

        Returns:
            A dict with ``code``, ``message``, ``hint`` and ``context`` keys.
        """
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "context": dict(self.context),
        }


class IdentifierError(TidemarkError):
    """A container number, manifest id or seal number is invalid."""

    default_code = "TM-0101"


class ConfigError(TidemarkError):
    """Configuration could not be loaded or contains bad values."""

    default_code = "TM-1001"


class ManifestError(TidemarkError):
    """A shipment manifest is invalid or in the wrong state."""

    default_code = "TM-2001"


class RateCardError(TidemarkError):
    """A rate card is malformed or cannot price the request."""

    default_code = "TM-3001"


class CustomsHoldError(TidemarkError):
    """A customs hold operation failed."""

    default_code = "TM-4001"


class DockConflictError(TidemarkError):
    """A dock booking could not be made or found."""

    default_code = "TM-5001"


class SlottingError(TidemarkError):
    """A yard slotting operation failed."""

    default_code = "TM-6001"


class CarrierError(TidemarkError):
    """A carrier adapter failed or rejected a request."""

    default_code = "TM-7001"


class LedgerError(TidemarkError):
    """The event ledger is corrupt or an event is malformed."""

    default_code = "TM-8001"


class RetryExhaustedError(TidemarkError):
    """Raised by :class:`~tidemark.retry.RetryPolicy` when every attempt failed.

    The last underlying exception is chained as ``__cause__`` and the list
    of :class:`~tidemark.retry.Attempt` records is kept on ``attempts``.
    """

    default_code = "TM-9001"

    def __init__(self, message: str, *, attempts: list[Any] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.attempts: list[Any] = list(attempts or [])


def describe_error(code: str) -> str:
    """Return the catalogue description for an error code.

    Args:
        code: An error code such as ``"TM-4002"``. Case-insensitive; the
            ``TM-`` prefix may be omitted (``"4002"`` works too).

    Returns:
        The one-line description from :data:`ERROR_CATALOG`.

    Raises:
        KeyError: If the code is not in the catalogue.

    Examples:
        >>> describe_error("6002")
        'Stacking would violate the heavy-low weight rule.'
    """
    normalised = code.strip().upper()
    if not normalised.startswith("TM-"):
        normalised = f"TM-{normalised}"
    try:
        return ERROR_CATALOG[normalised]
    except KeyError:
        raise KeyError(f"unknown tidemark error code: {code!r}") from None
