from __future__ import annotations

import io
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from tidemark import __version__
from tidemark.carriers import (
    CarrierAdapter,
    TrackingStatus,
    available_carriers,
    get_carrier,
    register_carrier,
    submit_manifest,
)
from tidemark.cli import EXIT_ERROR, EXIT_INVALID, EXIT_OK, main
from tidemark.customs import HoldRegistry
from tidemark.docks import DockDoor, DockSchedule
from tidemark.errors import CarrierError, RetryExhaustedError
from tidemark.ledger import EventLedger
from tidemark.manifest import ManifestLine, ManifestStatus, ShipmentManifest
from tidemark.ratecard import default_rate_card
from tidemark.reports import dock_board, format_quote, hold_report, manifest_summary, render_table, yard_map
from tidemark.retry import RetryPolicy
from tidemark.slotting import SlotPlanner, YardBlock
from tidemark.units import ContainerType


def quiet(_: float) -> None:
    return None


def test_registry_lists_builtin_carriers():
    assert {"gullwing", "kestrel", "saltmarsh"} <= set(available_carriers())
    with pytest.raises(CarrierError) as info:
        get_carrier("pelican")
    assert info.value.code == "TM-7001"


def test_submit_requires_sealed_manifest(manifest: ShipmentManifest):
    with pytest.raises(CarrierError) as info:
        get_carrier("saltmarsh").submit(manifest)
    assert info.value.code == "TM-7003"


def test_submit_with_retries_writes_ledger(manifest: ShipmentManifest):
    manifest.carrier = "kestrel"
    manifest.seal_with("BW0042117")
    ledger = EventLedger()
    adapter = get_carrier("kestrel", fail_first=2)
    receipt = submit_manifest(manifest, adapter=adapter, ledger=ledger, sleep=quiet)
    assert receipt.attempts == 3 and receipt.reference.startswith("KRF")
    assert manifest.status is ManifestStatus.SUBMITTED
    assert [e.kind for e in ledger] == ["carrier.retry", "carrier.retry", "manifest.submitted"]
    assert adapter.track(receipt.reference) is TrackingStatus.ACCEPTED
    assert adapter.track(receipt.reference) is TrackingStatus.LOADED


def test_submit_gives_up(manifest: ShipmentManifest):
    manifest.seal_with("BW0042117")
    adapter = get_carrier("gullwing", timeout_first=5)
    with pytest.raises(RetryExhaustedError):
        submit_manifest(manifest, adapter=adapter, policy=RetryPolicy(max_attempts=2), sleep=quiet)
    assert manifest.status is ManifestStatus.SEALED


def test_carrier_refusals():
    reefer = ShipmentManifest("BWF-2024-000123-X", "BWH", "OLM", carrier="kestrel", container_type=ContainerType.RF40)
    reefer.add_line(ManifestLine("FISH", "frozen cod", 100, 9000.0, hs_code="030363"))
    reefer.seal_with("BW0000001")
    with pytest.raises(CarrierError) as info:
        submit_manifest(reefer, sleep=quiet)
    assert info.value.code == "TM-7003"


def test_custom_adapter_registration(manifest: ShipmentManifest):
    @register_carrier
    class Heron(CarrierAdapter):
        code = "heron_test"
        display_name = "Heron Barges"
        mode = "barge"

        def _transmit(self, manifest: ShipmentManifest) -> str:
            return "HB-" + manifest.manifest_id[-8:]

    manifest.seal_with("BW0042117")
    receipt = get_carrier("heron_test").submit(manifest)
    assert receipt.reference == "HB-" + manifest.manifest_id[-8:]
    with pytest.raises(ValueError):
        register_carrier(type("Bad", (Heron,), {"code": "Bad-Code"}))


def test_reports_render(manifest: ShipmentManifest):
    assert render_table(["a", "n"], [["x", 1]]).splitlines() == ["a  n", "-  -", "x  1"]
    assert "total" in format_quote(manifest.quote(default_rate_card(), on_date=date(2024, 6, 3)))
    assert "KELP-01" in manifest_summary(manifest)
    sched = DockSchedule([DockDoor("D01")])
    sched.book(manifest.manifest_id, datetime(2024, 6, 3, 8, 0))
    assert "D01" in dock_board(sched, date(2024, 6, 3))
    planner = SlotPlanner([YardBlock("Y1", bays=3, rows=2)])
    planner.place("BWFU1234565", 20000)
    assert yard_map(planner, "Y1").splitlines()[2].startswith("r01")
    reg = HoldRegistry()
    reg.place(manifest.manifest_id, "H23")
    assert "HELD" in hold_report(reg, manifest.manifest_id)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_cli_quote_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli("quote", "--from", "BWH", "--to", "KSP", "--kg", "1200", "--date", "2024-06-03", "--json")
    assert code == EXIT_OK
    assert json.loads(text)["total"] == "920.16"


def test_cli_validate_exit_codes(manifest: ShipmentManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(manifest.to_dict()))
    assert run_cli("validate", str(good))[0] == EXIT_OK
    data = manifest.to_dict()
    data["seal"] = "SML88231"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, text = run_cli("validate", str(bad))
    assert code == EXIT_INVALID and "TM-0103" in text
    assert run_cli("validate", str(bad), "--lenient-seals")[0] == EXIT_OK


def test_cli_errors_and_explain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    assert run_cli("check-container", "BWFU1234560")[0] == EXIT_ERROR
    assert "TM-0101" in capsys.readouterr().err
    code, text = run_cli("explain", "tm-6004")
    assert code == EXIT_OK and text.startswith("TM-6004: Container is buried")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
