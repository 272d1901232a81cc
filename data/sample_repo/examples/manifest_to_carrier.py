"""End-to-end: build a manifest, pre-screen customs, seal, submit with retries.

The Kestrel adapter is told to fail twice (``fail_first=2``) so you can see
the retry policy and the ``carrier.retry`` ledger events.  The ledger file
lives in a temporary directory that is removed at the end.

Run from the repository root:  python examples/manifest_to_carrier.py
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark import ManifestLine, RetryPolicy, get_carrier, new_manifest, screen_manifest  # noqa: E402
from tidemark.carriers import submit_manifest  # noqa: E402
from tidemark.ids import IdSequence  # noqa: E402
from tidemark.ledger import EventLedger  # noqa: E402
from tidemark.ratecard import default_rate_card  # noqa: E402
from tidemark.reports import format_quote, manifest_summary  # noqa: E402
from tidemark.units import Dimensions  # noqa: E402


def main() -> None:
    manifest = new_manifest("BWH", "OLM", sequence=IdSequence(2024, 311), carrier="kestrel",
                            container_number="BWFU1234565")
    manifest.add_line(ManifestLine("NET-04", "trawl netting", 12, 640.0, Dimensions(100, 80, 60), hs_code="560811"))
    manifest.add_line(ManifestLine("BUOY-9", "mooring buoys", 30, 450.0, Dimensions(60, 60, 60), hs_code="392690"))
    manifest.add_line(ManifestLine("SALT-2", "sea salt, sacks", 80, 2000.0, hs_code="250100"))
    print(manifest_summary(manifest))
    print()

    predicted = screen_manifest(manifest)
    print("predicted holds:", ", ".join(c.value for c in predicted) or "none")
    print(format_quote(manifest.quote(default_rate_card(), on_date=date(2024, 6, 3))))
    print()

    manifest.seal_with("BW0042117")
    with tempfile.TemporaryDirectory() as tmp:
        ledger = EventLedger(Path(tmp) / "ledger.jsonl")
        ledger.append("manifest.sealed", manifest.manifest_id, {"seal": manifest.seal})
        adapter = get_carrier("kestrel", fail_first=2)
        policy = RetryPolicy(max_attempts=4, base_delay_s=0.01, jitter=0)
        receipt = submit_manifest(manifest, adapter=adapter, policy=policy, ledger=ledger)
        print(f"submitted to {receipt.carrier} as {receipt.reference} after {receipt.attempts} attempts")
        for event in EventLedger.load(ledger.path):
            print(f"  #{event.seq} {event.kind:<20} {event.payload}")
        print("ledger verified:", EventLedger.load(ledger.path).verify(), "events")
        print("tracking:", ", ".join(adapter.track(receipt.reference).value for _ in range(3)))


if __name__ == "__main__":
    main()
