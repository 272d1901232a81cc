from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tidemark.errors import IdentifierError, ManifestError, RateCardError
from tidemark.manifest import ManifestLine, ManifestStatus, ShipmentManifest
from tidemark.ratecard import RateBand, RateCard, default_rate_card, lane_key
from tidemark.units import ContainerType

QUOTE_DAY = date(2024, 6, 3)


def test_default_card_quote_breakdown():
    q = default_rate_card().quote("BWH", "KSP", 1200, on_date=QUOTE_DAY)
    assert (q.base, q.bunker, q.total) == (Decimal("852.00"), Decimal("68.16"), Decimal("920.16"))
    assert q.service_charge == Decimal("0.00")


def test_minimum_charge_and_service_levels():
    card = default_rate_card()
    small = card.quote("BWH", "KSP", 10, service="expedited", on_date=QUOTE_DAY)
    assert small.base == Decimal("45.00")
    assert small.total == Decimal("65.61")
    deferred = card.quote("BWH", "KSP", 10, service="deferred", on_date=QUOTE_DAY)
    assert deferred.total == Decimal("41.31")
    assert deferred.service_charge < 0


def test_bunker_index_scales_bunker_only():
    q = default_rate_card().quote("BWH", "OLM", 6000, bunker_index=1.25, on_date=QUOTE_DAY)
    assert q.base == Decimal("4140.00")
    assert q.bunker == Decimal("414.00")


def test_unknown_lane_and_expired_card():
    card = default_rate_card()
    with pytest.raises(RateCardError) as info:
        card.quote("BWH", "ZZZ", 100, on_date=QUOTE_DAY)
    assert info.value.code == "TM-3001"
    with pytest.raises(RateCardError) as info:
        card.quote("BWH", "KSP", 100, on_date=date(2023, 12, 31))
    assert info.value.code == "TM-3003"


def test_band_gap_is_rejected():
    card = RateCard("TEST")
    bands = [RateBand(0, 100, Decimal("1")), RateBand(150, None, Decimal("0.5"))]
    with pytest.raises(RateCardError) as info:
        card.add_lane("BWH", "KSP", bands)
    assert info.value.code == "TM-3002"


def test_card_round_trips_through_dict():
    card = default_rate_card()
    clone = RateCard.from_dict(card.to_dict())
    assert clone == card
    assert lane_key("bwh", "frn") in clone.lanes


def test_manifest_totals(manifest: ShipmentManifest):
    assert manifest.total_gross_kg == 2000.0
    assert manifest.total_packages == 50
    # 40 bales of 80x60x50 = 40 * 50 kg volumetric = 2000 kg > 1200 kg gross
    assert manifest.lines[0].chargeable_kg() == 2000.0
    assert manifest.total_chargeable_kg() == 2800.0


def test_duplicate_sku_and_payload_limit(manifest: ShipmentManifest):
    with pytest.raises(ManifestError) as info:
        manifest.add_line(ManifestLine("KELP-01", "again", 1, 5.0))
    assert info.value.code == "TM-2004"
    with pytest.raises(ManifestError) as info:
        manifest.add_line(ManifestLine("GRANITE", "granite setts", 20, 25_000.0))
    assert info.value.code == "TM-2003"


def test_seal_moves_to_sealed_and_freezes(manifest: ShipmentManifest):
    manifest.seal_with("bw0042117")
    assert manifest.status is ManifestStatus.SEALED and manifest.seal == "BW0042117"
    with pytest.raises(ManifestError) as info:
        manifest.add_line(ManifestLine("LATE", "late cargo", 1, 1.0))
    assert info.value.code == "TM-2005"


def test_seal_empty_manifest_and_bad_seal():
    empty = ShipmentManifest("BWF-2024-000123-X", "BWH", "KSP")
    with pytest.raises(ManifestError) as info:
        empty.seal_with("BW0042117")
    assert info.value.code == "TM-2001"
    empty.add_line(ManifestLine("A", "a", 1, 1.0))
    with pytest.raises(IdentifierError):
        empty.seal_with("SML88231")
    empty.seal_with("SML88231", strict=False)
    assert empty.status is ManifestStatus.SEALED


def test_manifest_quote_uses_chargeable_weight(manifest: ShipmentManifest):
    q = manifest.quote(default_rate_card(), on_date=QUOTE_DAY)
    assert q.chargeable_kg == 2800.0
    assert q.total == Decimal("2147.04")


def test_problems_and_round_trip(manifest: ShipmentManifest):
    data = manifest.to_dict()
    data["seal"] = "XX1"
    data["lines"].append({"sku": "ORE", "gross_kg": 30000})
    loaded = ShipmentManifest.from_dict(data)
    codes = [issue.code for issue in loaded.problems()]
    assert codes == ["TM-2003", "TM-0103"]
    assert loaded.container_type is ContainerType.G40
