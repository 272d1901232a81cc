"""Walk a manifest through the customs desk: place, document, release.

Run from the repository root:  python examples/customs_desk.py
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tidemark.customs import HoldRegistry, screen_manifest  # noqa: E402
from tidemark.errors import CustomsHoldError  # noqa: E402
from tidemark.manifest import ManifestLine, ShipmentManifest  # noqa: E402
from tidemark.reports import hold_report  # noqa: E402


def main() -> None:
    manifest = ShipmentManifest("BWF-2024-000123-X", "BWH", "FRN")
    manifest.add_line(ManifestLine("CRATE-1", "machine parts in wooden crates", 6, 1800.0, hs_code="440920"))
    manifest.add_line(ManifestLine("LUBE-5", "lubricating oil", 20, 400.0, hs_code="271019", hazmat_class="3"))
    manifest.add_line(ManifestLine("DOCS", "printed manuals", 2, 30.0))

    start = datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc)
    registry = HoldRegistry(clock=lambda: start)
    for code in screen_manifest(manifest):
        registry.place(manifest.manifest_id, code, note="pre-screen")
    print(hold_report(registry, manifest.manifest_id))
    print()

    try:
        registry.release(manifest.manifest_id, "H40")
    except CustomsHoldError as exc:
        print(f"release refused: {exc}")
    registry.attach_document(manifest.manifest_id, "H40", "hazmat_decl")
    registry.release(manifest.manifest_id, "H40")
    registry.attach_document(manifest.manifest_id, "H17", "fumigation_cert")
    registry.release(manifest.manifest_id, "H17")

    lapsed = registry.auto_release(start + timedelta(hours=48))
    print("auto-released:", ", ".join(h.code.value for h in lapsed))
    print()
    print(hold_report(registry, manifest.manifest_id))


if __name__ == "__main__":
    main()
