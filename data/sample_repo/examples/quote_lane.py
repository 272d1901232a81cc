"""Price a few consignments on the standing tariff and print a comparison.

Run from the repository root:  python examples/quote_lane.py
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark.ratecard import ServiceLevel, default_rate_card  # noqa: E402
from tidemark.reports import format_quote, render_table  # noqa: E402
from tidemark.units import Dimensions, chargeable_kg, parse_weight  # noqa: E402

QUOTE_DAY = date(2024, 6, 3)


def main() -> None:
    card = default_rate_card()

    # A pallet of kelp crackers: light but bulky, so volumetric weight wins.
    pallet = Dimensions(120, 100, 160)
    kg = chargeable_kg(parse_weight("310 kg"), pallet)
    print(f"pallet volumetric {pallet.volumetric_kg():.1f} kg -> chargeable {kg} kg")
    print(format_quote(card.quote("BWH", "KSP", kg, on_date=QUOTE_DAY)))
    print()

    rows = []
    for weight in (40, 480, 1200, 7500):
        for level in ServiceLevel:
            q = card.quote("BWH", "OLM", weight, service=level, bunker_index=1.12, on_date=QUOTE_DAY)
            rows.append([weight, level.value, q.base, q.bunker, q.total])
    print("BWH>OLM at bunker index 1.12")
    print(render_table(["kg", "service", "base", "bunker", "total"], rows))


if __name__ == "__main__":
    main()
