"""The ``tidemark`` command-line interface.

Sub-commands::

    tidemark quote --from BWH --to KSP --kg 1200 [--service expedited]
                   [--bunker-index 1.15] [--card card.json] [--date 2024-06-03] [--json]
    tidemark validate manifest.json [--lenient-seals] [--json]
    tidemark screen manifest.json
    tidemark ledger verify ledger.jsonl
    tidemark ledger tail ledger.jsonl [-n 10]
    tidemark config show [--json]
    tidemark explain TM-4002
    tidemark carriers
    tidemark check-container BWFU1234565

Global options ``--config PATH`` and ``--version`` go before the sub-command.

Exit codes: ``0`` success, ``2`` usage error (argparse), ``3`` validation
found problems, ``4`` a :class:`~tidemark.errors.TidemarkError` was raised.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Sequence, TextIO

from . import __version__
from .carriers import _REGISTRY, available_carriers
from .config import CONFIG_KEYS, env_name, load_config
from .customs import HOLD_RULES, screen_manifest
from .errors import RateCardError, TidemarkError, describe_error
from .ids import validate_container_number
from .ledger import EventLedger
from .manifest import ShipmentManifest
from .ratecard import ServiceLevel, default_rate_card, load_rate_card
from .reports import format_quote, render_table
from .units import chargeable_kg, parse_weight

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_INVALID", "EXIT_ERROR", "build_parser", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_ERROR = 4


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="tidemark", description="Brackwater Freight terminal toolkit.")
    parser.add_argument("--version", action="version", version=f"tidemark {__version__}")
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)

    quote = sub.add_parser("quote", help="price a consignment")
    quote.add_argument("--from", dest="origin", required=True, metavar="PORT")
    quote.add_argument("--to", dest="destination", required=True, metavar="PORT")
    weight = quote.add_mutually_exclusive_group(required=True)
    weight.add_argument("--kg", type=float, help="weight in kg (rounded up to 0.5 kg)")
    weight.add_argument("--weight", help='weight with unit, e.g. "1.2t" or "2,400 lb"')
    quote.add_argument("--service", choices=[s.value for s in ServiceLevel], default="standard")
    quote.add_argument("--bunker-index", type=float, default=None, help="default: rates.bunker_index")
    quote.add_argument("--card", metavar="PATH", help="rate card JSON (default: BW-STD-2024)")
    quote.add_argument("--date", type=date.fromisoformat, default=None, help="quote date, YYYY-MM-DD")
    quote.add_argument("--json", action="store_true", help="machine readable output")

    validate = sub.add_parser("validate", help="validate a manifest JSON file")
    validate.add_argument("manifest", metavar="MANIFEST_JSON")
    validate.add_argument("--lenient-seals", action="store_true", help="accept third-party seal formats")
    validate.add_argument("--json", action="store_true")

    screen = sub.add_parser("screen", help="predict customs holds for a manifest")
    screen.add_argument("manifest", metavar="MANIFEST_JSON")

    ledger = sub.add_parser("ledger", help="inspect an event ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_sub.add_parser("verify", help="verify the hash chain")
    verify.add_argument("path")
    tail = ledger_sub.add_parser("tail", help="print the newest events")
    tail.add_argument("path")
    tail.add_argument("-n", type=int, default=10, help="number of events (default 10)")

    config = sub.add_parser("config", help="show resolved configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show")
    show.add_argument("--json", action="store_true")

    explain = sub.add_parser("explain", help="describe an error code")
    explain.add_argument("code")

    sub.add_parser("carriers", help="list registered carrier adapters")

    check = sub.add_parser("check-container", help="validate an ISO 6346 container number")
    check.add_argument("number")
    return parser


def _load_manifest(path: str, default_carrier: str) -> ShipmentManifest:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return ShipmentManifest.from_dict(data, default_carrier=default_carrier)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    cfg = load_config(args.config)
    if args.command == "quote":
        card = load_rate_card(args.card) if args.card else default_rate_card()
        if card.currency != cfg.currency:
            raise RateCardError(f"card {card.card_id} is in {card.currency}, config expects {cfg.currency}",
                                code="TM-3004", hint="set currency in [tidemark] or use a matching card")
        kg = chargeable_kg(args.kg if args.kg is not None else parse_weight(args.weight))
        bunker = cfg.bunker_index if args.bunker_index is None else args.bunker_index
        result = card.quote(args.origin, args.destination, kg, service=args.service,
                            bunker_index=bunker, on_date=args.date)
        print(json.dumps(result.to_dict(), indent=2) if args.json else format_quote(result), file=out)
        return EXIT_OK
    if args.command == "validate":
        manifest = _load_manifest(args.manifest, cfg.default_carrier)
        strict = cfg.strict_seals and not args.lenient_seals
        issues = manifest.problems(strict_seals=strict)
        if args.json:
            print(json.dumps([{"code": i.code, "message": i.message} for i in issues], indent=2), file=out)
        elif issues:
            for issue in issues:
                print(f"{issue.code}  {issue.message}", file=out)
        else:
            print(f"{manifest.manifest_id}: OK ({len(manifest.lines)} lines)", file=out)
        return EXIT_INVALID if issues else EXIT_OK
    if args.command == "screen":
        manifest = _load_manifest(args.manifest, cfg.default_carrier)
        codes = screen_manifest(manifest)
        rows = [[c.value, HOLD_RULES[c].title, ", ".join(sorted(HOLD_RULES[c].clears_with))] for c in codes]
        print(render_table(["code", "title", "clears_with"], rows) if rows else "no holds predicted", file=out)
        return EXIT_OK
    if args.command == "ledger":
        ledger = EventLedger.load(args.path, verify=args.ledger_command == "verify")
        if args.ledger_command == "verify":
            print(f"{args.path}: {len(ledger)} events OK, head {ledger.head_hash[:12]}", file=out)
        else:
            for event in list(ledger)[-args.n:]:
                print(f"{event.seq:>6}  {event.recorded_at}  {event.kind:<20} {event.subject}", file=out)
        return EXIT_OK
    if args.command == "config":
        values = cfg.as_dict()
        if args.json:
            print(json.dumps(values, indent=2), file=out)
        else:
            rows = [[k.key, repr(values[k.key]), env_name(k.key)] for k in CONFIG_KEYS]
            print(render_table(["key", "value", "env"], rows), file=out)
        return EXIT_OK
    if args.command == "explain":
        try:
            text = describe_error(args.code)
            code = args.code.strip().upper()
            print(f"{code if code.startswith('TM-') else 'TM-' + code}: {text}", file=out)
        except KeyError as exc:
            print(str(exc).strip('"'), file=out)
            return EXIT_USAGE
        return EXIT_OK
    if args.command == "carriers":
        rows = [[code, _REGISTRY[code].display_name, _REGISTRY[code].mode] for code in available_carriers()]
        print(render_table(["code", "name", "mode"], rows), file=out)
        return EXIT_OK
    if args.command == "check-container":
        print(validate_container_number(args.number), file=out)
        return EXIT_OK
    raise AssertionError(args.command)  # pragma: no cover


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of the ``tidemark`` console script.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.
        out: Stream for normal output (default ``sys.stdout``). Errors always
            go to ``sys.stderr``.

    Returns:
        The process exit code (see module docstring).
    """
    stream = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return _run(args, stream)
    except TidemarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
