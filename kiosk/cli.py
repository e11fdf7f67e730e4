"""`thanthien kiosk`: the counter kiosk and the tools a ward clerk uses around it.

Without a subcommand it starts the touchscreen UI. Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from thanthien.cli import add_command

DEFAULT_CONFIG = Path("/etc/thanthien/kiosk.toml")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "kiosk", "the counter kiosk: procedures, read-aloud, satisfaction ratings (UI or tools)",
        description="Run the touchscreen kiosk of the one-stop counter (no subcommand), or one of its tools.",
        epilog="Exit status: 0 done, 1 nothing found / station refused, 2 invalid input or config.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"the kiosk's TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--db", type=Path, help="use this database instead of the one in the config's data_dir")
    p.set_defaults(func=cmd_run)
    # The same options after the tool's name (`thanthien kiosk search Q --config F`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="the kiosk's TOML config")
    common.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="use this database instead")
    ks = p.add_subparsers(dest="kiosk_command", metavar="TOOL", title="tools")

    r = add_command(ks, "run", "start the touchscreen UI (the default)", parents=[common])
    r.add_argument("--size", metavar="WxH", help="window size instead of full screen, e.g. 800x480")
    r.add_argument("--screenshot-dir", type=Path, help="save a PNG of every screen shown here")
    r.set_defaults(func=cmd_run)

    i = add_command(ks, "import", "import a procedure catalogue (national database JSON or CSV)", parents=[common],
                    description="Import procedures; records are updated in place by code, ratings are never touched. "
                                "A file with any bad record is refused as a whole.")
    i.add_argument("file", type=Path, help=".json export of the national procedures database, or .csv")
    i.set_defaults(func=cmd_import)

    s = add_command(ks, "search", "search procedures (diacritics and case ignored, one typo per word forgiven)", parents=[common])
    s.add_argument("query", help="words to look for, e.g. 'dang ky ket hon'")
    s.add_argument("--field", help="only procedures of this field (lĩnh vực)")
    s.add_argument("--limit", type=int, default=20, help="at most this many results (default 20)")
    s.add_argument("--json", action="store_true", help="print one JSON array of {code, name, field, score}")
    s.set_defaults(func=cmd_search)

    f = add_command(ks, "fields", "list the fields (lĩnh vực) and how many procedures each has", parents=[common])
    f.set_defaults(func=cmd_fields)

    st = add_command(ks, "stats", "satisfaction: share of 4-5 answers, against the target", parents=[common])
    st.add_argument("--by", default="overall", choices=("overall", "factor", "officer", "field", "month"))
    st.add_argument("--month", help="YYYY-MM (default: all time)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    e = add_command(ks, "export", "write ratings or feedback as CSV", parents=[common])
    e.add_argument("--kind", default="ratings", choices=("ratings", "feedback"))
    e.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    e.set_defaults(func=cmd_export)

    y = add_command(ks, "sync", "upload the outbox to the station and pull catalogue and announcements once", parents=[common])
    y.set_defaults(func=cmd_sync)

    h = add_command(ks, "pin-hash", "print the hash of an admin PIN for [admin] pin_hash in the config", parents=[common],
                    description="Asks for the PIN twice (4-12 digits) and prints its scrypt hash.")
    h.add_argument("--stdin", action="store_true", help="read the PIN from standard input instead of the terminal")
    h.set_defaults(func=cmd_pin_hash, needs_config=False)


def _config(args):
    from devices.config import load_config

    from .config import KioskConfig

    return load_config(args.config, KioskConfig)


def _kiosk(args):
    from .core import Kiosk

    return Kiosk(_config(args), db_path=args.db)


def _fail(message: str, code: int = 2) -> int:
    print(f"thanthien kiosk: {message}", file=sys.stderr)
    return code


def cmd_import(args) -> int:
    from .catalogue import CatalogueError

    with _kiosk(args) as kiosk:
        try:
            result = kiosk.import_catalogue(args.file)
        except CatalogueError as exc:
            return _fail(f"{exc}\nnothing was imported; fix the file and run the import again")
    print(f"imported {args.file}: {result['added']} added, {result['updated']} updated, {result['total']} in the catalogue")
    return 0


def cmd_search(args) -> int:
    if not 1 <= args.limit <= 500:
        return _fail("--limit must be 1…500")
    with _kiosk(args) as kiosk:
        hits = kiosk.search(args.query, field=args.field, limit=args.limit)
    if args.json:
        json.dump([h.to_dict() for h in hits], sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        for h in hits:
            print(f"{h.code:<12} {h.name}  [{h.field}]")
        if not hits:
            print("no procedure matches; try fewer words", file=sys.stderr)
    return 0 if hits else 1


def cmd_fields(args) -> int:
    with _kiosk(args) as kiosk:
        for name, count in kiosk.fields():
            print(f"{count:>4}  {name}")
    return 0


def cmd_stats(args) -> int:
    from .ratings import InputError

    with _kiosk(args) as kiosk:
        try:
            shares = kiosk.satisfaction(args.by, args.month)
        except InputError as exc:
            return _fail(str(exc))
        target = kiosk.config.satisfaction_target_pct
    if args.json:
        json.dump([s.as_dict() for s in shares], sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        for s in shares:
            mark = "đạt" if s.meets_target else "chưa đạt"
            print(f"{s.label:<40} {s.pct:>5.1f} %  ({s.satisfied}/{s.answers})  {mark} {target} %")
    return 0


def cmd_export(args) -> int:
    from .ratings import export_csv

    with _kiosk(args) as kiosk:
        with kiosk.lock:
            text = export_csv(kiosk.db, args.kind)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_sync(args) -> int:
    from .sync import StationSync, SyncError

    with _kiosk(args) as kiosk:
        try:
            sync = StationSync.from_config(kiosk)
        except SyncError as exc:
            return _fail(str(exc))
        report = sync.run_once()
    print(json.dumps(report, ensure_ascii=False))
    return 0 if report.get("ok") else 1


def cmd_pin_hash(args) -> int:
    from .pin import hash_pin

    if args.stdin:
        pin = sys.stdin.readline().strip()
    else:
        pin = getpass.getpass("PIN: ")
        if getpass.getpass("PIN again: ") != pin:
            return _fail("the two PINs differ")
    try:
        print(hash_pin(pin))
    except ValueError as exc:
        return _fail(str(exc))
    return 0


def cmd_run(args) -> int:
    from devices.config import setup_logging

    cfg = _config(args)
    setup_logging(cfg.logging, f"kiosk:{cfg.kiosk_id}")
    size = getattr(args, "size", None)
    if size:
        try:
            w, h = (int(x) for x in size.lower().split("x"))
            if not (320 <= w <= 7680 and 240 <= h <= 4320):
                raise ValueError
        except ValueError:
            return _fail(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 800x480")
        size = (w, h)
    from .ui.app import run_app

    return run_app(cfg, db_path=args.db, size=size, screenshot_dir=getattr(args, "screenshot_dir", None))
