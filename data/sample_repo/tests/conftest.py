"""Shared fixtures; puts the repository root on sys.path so ``import tidemark`` works."""

from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tidemark.ids import IdSequence  # noqa: E402
from tidemark.manifest import ManifestLine, ShipmentManifest, new_manifest  # noqa: E402
from tidemark.units import Dimensions  # noqa: E402

QUOTE_DAY = date(2024, 6, 3)


@pytest.fixture
def sequence() -> IdSequence:
    return IdSequence(year=2024, start=100)


@pytest.fixture
def manifest(sequence: IdSequence) -> ShipmentManifest:
    m = new_manifest("BWH", "KSP", sequence=sequence, container_number="BWFU1234565")
    m.add_line(ManifestLine("KELP-01", "dried kelp, bales", 40, 1200.0, Dimensions(80, 60, 50), hs_code="121221"))
    m.add_line(ManifestLine("ROPE-22", "mooring rope", 10, 800.0, hs_code="560750"))
    return m


@pytest.fixture
def fixed_clock():
    moment = datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc)
    return lambda: moment
