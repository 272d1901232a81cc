"""tidemark - Brackwater Freight's terminal operations toolkit.

tidemark is the internal Python library used by the Terminal Systems team
(``#term-systems``) to build shipment manifests, price them against rate
cards, book dock doors, slot containers in the yard, track customs holds,
talk to carriers and keep an auditable event ledger.

The most used names are re-exported here::

    from tidemark import new_manifest, ManifestLine, default_rate_card

Everything else lives in its submodule (``tidemark.docks``,
``tidemark.slotting``...).
"""

from __future__ import annotations

__version__ = "3.4.1"

from .carriers import CarrierReceipt, get_carrier, register_carrier, submit_manifest
from .config import TidemarkConfig, load_config
from .customs import HoldCode, HoldRegistry, screen_manifest
from .docks import DockDoor, DockSchedule
from .errors import TidemarkError, describe_error
from .ids import IdSequence, manifest_id, validate_container_number, validate_seal
from .ledger import EventLedger
from .manifest import ManifestLine, ManifestStatus, ShipmentManifest, new_manifest
from .ratecard import RateBand, RateCard, ServiceLevel, default_rate_card
from .retry import RetryPolicy
from .slotting import SlotPlanner, YardBlock
from .units import ContainerType, Dimensions, chargeable_kg

__all__ = [
    "__version__",
    "CarrierReceipt",
    "ContainerType",
    "Dimensions",
    "DockDoor",
    "DockSchedule",
    "EventLedger",
    "HoldCode",
    "HoldRegistry",
    "IdSequence",
    "ManifestLine",
    "ManifestStatus",
    "RateBand",
    "RateCard",
    "RetryPolicy",
    "ServiceLevel",
    "ShipmentManifest",
    "SlotPlanner",
    "TidemarkConfig",
    "TidemarkError",
    "YardBlock",
    "chargeable_kg",
    "default_rate_card",
    "describe_error",
    "get_carrier",
    "load_config",
    "manifest_id",
    "new_manifest",
    "register_carrier",
    "screen_manifest",
    "submit_manifest",
    "validate_container_number",
    "validate_seal",
]
