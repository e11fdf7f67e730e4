"""`thanthien station`: run the ward station, or manage it from the command line.

Without an action it runs the station (dispatcher, ingest, media server, and the web
console with its JSON API when [web] is enabled). Every action works on the station's
database and is audited under the user given with --as.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from thanthien.cli import add_command

DEFAULT_CONFIG = Path("/etc/thanthien/station.toml")


def register(sub: argparse._SubParsersAction) -> None:
    st = add_command(sub, "station", "run the ward station, or manage groups, media, bulletins, schedules, reports",
                     description=__doc__)
    st.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"station config (default {DEFAULT_CONFIG})")
    st.add_argument("--as", dest="actor", default="admin", help="the user doing this (audited; default admin)")
    st.set_defaults(func=cmd_run)
    acts = st.add_subparsers(dest="station_action", metavar="ACTION")

    u = add_command(acts, "user-add", "create a station user (operator, approver, technician, viewer, admin)")
    u.add_argument("username")
    u.add_argument("--role", required=True, choices=["operator", "approver", "technician", "viewer", "admin"])
    u.add_argument("--name", required=True, help="display name")
    u.add_argument("--password-stdin", action="store_true",
                   help="read the console password from standard input (otherwise asked twice on the terminal)")
    u.add_argument("--no-password", action="store_true", help="create without a console password (CLI use only)")
    u.set_defaults(func=cmd_user_add)

    pw = add_command(acts, "passwd", "set a user's console password (scrypt); their open sessions end")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw.set_defaults(func=cmd_passwd)

    for name, kind, what in (("kiosk-token", "kiosk", "KIOSK_ID"), ("api-token", "user", "USERNAME")):
        tk = add_command(acts, name, f"issue or revoke a bearer token for the JSON API ({'a counter kiosk' if kind == 'kiosk' else 'a script acting as a user'})")
        tks = tk.add_subparsers(dest="token_action", metavar="STEP", required=True)
        ta = add_command(tks, "add", "issue a new token and print it once (only its SHA-256 is stored)")
        ta.add_argument("subject", metavar=what)
        ta.add_argument("--label", help="a note, e.g. where the token is used")
        ta.set_defaults(func=cmd_token, kind=kind, step="add")
        tr = add_command(tks, "revoke", "revoke every token of this " + ("kiosk" if kind == "kiosk" else "user"))
        tr.add_argument("subject", metavar=what)
        tr.set_defaults(func=cmd_token, kind=kind, step="revoke")

    ci = add_command(acts, "catalogue-import", "store the ward's procedure catalogue (JSON, the kiosk import format) "
                                               "for kiosks to fetch")
    ci.add_argument("file", type=Path)
    ci.set_defaults(func=cmd_catalogue_import)

    g = add_command(acts, "group-add", "create or update a residential group (tổ dân phố / thôn)")
    g.add_argument("code")
    g.add_argument("--name", required=True)
    g.add_argument("--gps", help="LAT,LON")
    g.add_argument("--quiet", help="quiet hours HH:MM-HH:MM, e.g. 22:00-05:30")
    g.set_defaults(func=cmd_group_add)

    d = add_command(acts, "device-add", "create or update a speaker device and its groups")
    d.add_argument("device_id")
    d.add_argument("--name", required=True)
    d.add_argument("--group", action="append", default=[], help="group code (repeatable)")
    d.add_argument("--location")
    d.add_argument("--volume", type=int, default=70)
    d.add_argument("--max-volume", type=int, default=100)
    d.add_argument("--emergency-volume", type=int, default=100)
    d.set_defaults(func=cmd_device_add)

    m = add_command(acts, "media-import", "import an audio file (validated by decoding it)")
    m.add_argument("file", type=Path)
    m.set_defaults(func=cmd_media_import)

    b = add_command(acts, "bulletin", "create and move bulletins through draft → submitted → approved")
    bs = b.add_subparsers(dest="bulletin_action", metavar="STEP", required=True)
    bc = add_command(bs, "create", "write a bulletin (text and/or audio)")
    bc.add_argument("--title", required=True)
    bc.add_argument("--level", default="normal", choices=["normal", "priority", "emergency"])
    bc.add_argument("--text")
    bc.add_argument("--text-file", type=Path)
    bc.add_argument("--media", help="sha256 of imported audio")
    bc.set_defaults(func=cmd_bulletin_create)
    for step, helptext in (("submit", "render the audio and ask for approval"), ("approve", "approve (approvers only)"),
                           ("reject", "reject with a reason"), ("cancel", "cancel with a reason")):
        sp = add_command(bs, step, helptext)
        sp.add_argument("id", type=int)
        if step in ("reject", "cancel", "approve"):
            sp.add_argument("--reason", required=step != "approve")
        sp.set_defaults(func=cmd_bulletin_step, step=step)
    bl = add_command(bs, "list", "list bulletins")
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=cmd_bulletin_list)

    s = add_command(acts, "schedule", "schedule an approved bulletin or a relay window",
                    epilog="Times are in the ward's time zone: --at 'YYYY-MM-DD HH:MM[:SS]'.")
    s.add_argument("--bulletin", type=int)
    s.add_argument("--relay-url")
    s.add_argument("--relay-minutes", type=int)
    s.add_argument("--at", required=True, help="first (or only) time, 'YYYY-MM-DD HH:MM[:SS]' or 'now+SECONDS'")
    s.add_argument("--kind", default="once", choices=["once", "daily", "weekly", "monthly", "rrule"])
    s.add_argument("--days", help="weekly: mo,tu,we,th,fr,sa,su")
    s.add_argument("--monthday", type=int)
    s.add_argument("--rrule")
    s.add_argument("--count", type=int)
    s.add_argument("--until", help="last day 'YYYY-MM-DD'")
    s.add_argument("--repeat", type=int, default=1, help="plays per occurrence (1-20)")
    s.add_argument("--all", action="store_true", help="every speaker")
    s.add_argument("--group", action="append", default=[])
    s.add_argument("--device", action="append", default=[])
    s.add_argument("--preview", action="store_true", help="show occurrences, quiet-hour and overlap warnings only")
    s.set_defaults(func=cmd_schedule)

    r = add_command(acts, "report", "proof of play and criterion-8 figures (CSV or JSON)")
    r.add_argument("kind", choices=["outcomes", "devices", "coverage", "offline"])
    r.add_argument("--from", dest="start", help="YYYY-MM-DD (default: 30 days ago)")
    r.add_argument("--to", dest="end", help="YYYY-MM-DD (default: now)")
    r.add_argument("--group")
    r.add_argument("--device")
    r.add_argument("--bulletin", type=int)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)

    e = add_command(acts, "emergency", "send an emergency bulletin at once (approver, or operator if allowed)",
                    epilog="The bulletin must have level emergency. Every node in the targets plays it now, "
                           "pre-empting anything else, at its emergency volume, even in quiet hours.")
    e.add_argument("--bulletin", type=int, required=True)
    e.add_argument("--reason", required=True, help="why (audited)")
    e.add_argument("--all", action="store_true")
    e.add_argument("--group", action="append", default=[])
    e.add_argument("--device", action="append", default=[])
    e.set_defaults(func=cmd_emergency)

    al = add_command(acts, "alerts", "list open alerts: offline nodes, clocks off, repeated play failures")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alerts)

    bk = add_command(acts, "backup", "back up the database now (SQLite backup API)")
    bk.set_defaults(func=cmd_backup)
    rs = add_command(acts, "restore", "replace the database with a backup (stop the station first)",
                     epilog="The backup is checked (integrity, station tables) before anything changes; the "
                            "replaced database is kept next to it as station.db.before-restore-TIME.")
    rs.add_argument("backup", type=Path, help="a file made by `backup` (DATA_DIR/backups/station-*.db)")
    rs.set_defaults(func=cmd_restore)

    k = add_command(acts, "key", "print the station's public key (for node configs)")
    k.set_defaults(func=cmd_key)

    kr = add_command(acts, "key-rotate", "start a signing-key rotation: nodes learn the new key during the overlap",
                     epilog="The old key keeps signing until `key-finish`; choose an overlap longer than any node's "
                            "usual time offline. A node offline for the whole overlap needs the new key by hand.")
    kr.add_argument("--overlap-days", type=float, default=7.0)
    kr.set_defaults(func=cmd_key_rotate)
    kf = add_command(acts, "key-finish", "switch to the new key once the overlap has passed (or --force)")
    kf.add_argument("--force", action="store_true")
    kf.set_defaults(func=cmd_key_finish)


def _cfg(args):
    from devices.config import load_config

    from .config import StationConfig

    return load_config(args.config, StationConfig)


def _ctx(args):
    from .areas import actor_for
    from .db import open_db
    from .media import MediaLibrary
    from .tts import TextToSpeech

    cfg = _cfg(args)
    db = open_db(cfg.data_dir / "station.db")
    lib = MediaLibrary(db, cfg.data_dir / "media", cfg.http.max_upload_bytes)
    tts = TextToSpeech.from_settings(cfg.data_dir / "tts-cache", cfg.tts)
    if db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0 and args.actor == "admin":
        from .areas import add_user

        add_user(db, "admin", "admin", "Quản trị")
    return cfg, db, lib, tts, actor_for(db, args.actor)


def _guard(fn):
    def run(args):
        from devices.errors import ThanthienError, ValidationError

        try:
            return fn(args) or 0
        except ValidationError as exc:
            print("Lỗi: " + "; ".join(exc.problems), file=sys.stderr)
            return 2
        except ThanthienError as exc:
            print(f"Lỗi: {exc}", file=sys.stderr)
            return 1
    return run


def _parse_time(text: str, tz: str) -> int:
    from zoneinfo import ZoneInfo

    from devices.errors import ValidationError

    from .db import now_ms

    if text.startswith("now+"):
        try:
            return now_ms() + int(float(text[4:]) * 1000)
        except ValueError:
            raise ValidationError(["--at: viết now+SỐ_GIÂY, ví dụ now+30"]) from None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return int(dt.datetime.strptime(text, fmt).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)
        except ValueError:
            continue
    raise ValidationError([f"thời gian {text!r}: viết YYYY-MM-DD HH:MM, ví dụ 2026-12-01 06:30"])


def cmd_run(args) -> int:
    from devices.config import setup_logging

    from .service import run

    cfg = _cfg(args)
    setup_logging(cfg.logging, "station")
    import logging

    from thanthien.timesync import check_at_start

    check_at_start(logging.getLogger("thanthien.station"), "station")
    notify = None
    try:
        import sdnotify

        notify = sdnotify.SystemdNotifier().notify
    except ImportError:  # pragma: no cover
        pass
    return run(cfg, notify)


def _read_password(args) -> str:
    from devices.errors import ValidationError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Mật khẩu: ")
    if first != getpass.getpass("Nhập lại mật khẩu: "):
        raise ValidationError(["mật khẩu: hai lần nhập không khớp"])
    return first


@_guard
def cmd_user_add(args):
    from . import auth
    from .areas import add_user

    cfg, db, _l, _t, actor = _ctx(args)
    password = None if args.no_password else _read_password(args)
    if password is not None:
        auth.check_new_password(password)
    add_user(db, args.username, args.role, args.name)
    if password is not None:
        auth.set_password(db, actor, args.username, password)
    print(f"đã tạo tài khoản {args.username} ({args.role})" + ("" if password else " — chưa có mật khẩu đăng nhập"))


@_guard
def cmd_passwd(args):
    from . import auth

    _c, db, _l, _t, actor = _ctx(args)
    auth.set_password(db, actor, args.username, _read_password(args))
    print(f"đã đặt mật khẩu cho {args.username}")


@_guard
def cmd_token(args):
    from . import kiosk_feed

    _c, db, _l, _t, actor = _ctx(args)
    if args.step == "add":
        print(kiosk_feed.add_token(db, actor, args.kind, args.subject, args.label))
    else:
        n = kiosk_feed.revoke_tokens(db, actor, args.kind, args.subject)
        print(f"đã thu hồi {n} mã truy cập của {args.subject}")


@_guard
def cmd_catalogue_import(args):
    from . import kiosk_feed

    _c, db, _l, _t, actor = _ctx(args)
    r = kiosk_feed.import_catalogue(db, actor, args.file)
    print(f"đã lưu danh mục: {r['procedures']} thủ tục, phiên bản {r['version'][:12]}")


@_guard
def cmd_group_add(args):
    from devices.errors import ValidationError

    from .areas import save_group

    _cfg_, db, _l, _t, actor = _ctx(args)
    lat = lon = qs = qe = None
    if args.gps:
        try:
            lat, lon = (float(x) for x in args.gps.split(","))
        except ValueError:
            raise ValidationError(["--gps: viết VĨ_ĐỘ,KINH_ĐỘ, ví dụ 14.42,109.01"]) from None
    if args.quiet:
        qs, _, qe = args.quiet.partition("-")
    save_group(db, actor, args.code, args.name, lat=lat, lon=lon, quiet_start=qs, quiet_end=qe or None)
    print(f"đã lưu tổ {args.code}")


@_guard
def cmd_device_add(args):
    from .areas import save_device

    _c, db, _l, _t, actor = _ctx(args)
    save_device(db, actor, args.device_id, args.name, args.group, location=args.location, volume=args.volume,
                max_volume=args.max_volume, emergency_volume=args.emergency_volume)
    print(f"đã lưu loa {args.device_id} (tổ: {', '.join(args.group) or 'không'})")


@_guard
def cmd_media_import(args):
    _c, db, lib, *_ = _ctx(args)
    info = lib.import_file(args.file)
    print(json.dumps(info.__dict__, ensure_ascii=False))


@_guard
def cmd_bulletin_create(args):
    from . import bulletins

    _c, db, _l, _t, actor = _ctx(args)
    text = args.text
    if args.text_file:
        text = args.text_file.read_text("utf-8")
    bid = bulletins.create(db, actor, args.title, args.level, text=text, media_sha256=args.media)
    print(bid)


@_guard
def cmd_bulletin_step(args):
    from . import bulletins

    _c, db, lib, tts, actor = _ctx(args)
    if args.step == "submit":
        b = bulletins.submit(db, lib, tts, actor, args.id)
        print(f"bản tin {b.id}: chờ duyệt" + (" (âm thanh dự phòng espeak-ng — không có mạng)" if b.audio_fallback else ""))
    elif args.step == "approve":
        b = bulletins.approve(db, actor, args.id, args.reason)
        print(f"bản tin {b.id}: đã duyệt")
    elif args.step == "reject":
        print(f"bản tin {bulletins.reject(db, actor, args.id, args.reason).id}: bị từ chối")
    else:
        print(f"bản tin {bulletins.cancel(db, actor, args.id, args.reason).id}: đã hủy")


@_guard
def cmd_bulletin_list(args):
    from .bulletins import STATE_VI, State

    _c, db, *_ = _ctx(args)
    rows = db.execute("SELECT id, title, level, state, audio_fallback, author FROM bulletins ORDER BY id").fetchall()
    if args.json:
        print(json.dumps([dict(id=r[0], title=r[1], level=r[2], state=r[3], audio_fallback=bool(r[4]), author=r[5])
                          for r in rows], ensure_ascii=False))
        return
    for r in rows:
        print(f"{r[0]:>4}  {STATE_VI[State(r[3])]:<12} {r[2]:<10} {r[1]}" + ("  [âm thanh dự phòng]" if r[4] else ""))


@_guard
def cmd_schedule(args):
    from devices.errors import ValidationError

    from . import schedules
    from .bulletins import get

    cfg, db, _l, _t, actor = _ctx(args)
    horizon = cfg.schedule_horizon_h * 3600 * 1000
    dtstart = _parse_time(args.at, cfg.timezone)
    until = _parse_time(args.until + " 23:59:59", cfg.timezone) if args.until else None
    rule = schedules.build_rrule(args.kind, weekdays=args.days.split(",") if args.days else None,
                                 monthday=args.monthday, rrule=args.rrule, count=args.count)
    targets = schedules.Targets(args.all, tuple(args.group), tuple(args.device))
    if args.bulletin is None and not args.relay_url:
        raise ValidationError(["--bulletin hoặc --relay-url: chọn bản tin hoặc luồng tiếp sóng"])
    if args.preview:
        b = get(db, args.bulletin) if args.bulletin else None
        prio = b.level.priority if b else 0
        dur = (args.relay_minutes or 1) * 60_000 if args.relay_url else 60_000
        pv = schedules.preview(db, cfg.timezone, horizon, bulletin=b, rule=rule, dtstart=dtstart, targets=targets,
                               priority=prio, duration_ms=dur, valid_until=until)
        print(json.dumps({"occurrences": pv.starts[:50], "quiet_conflicts": pv.quiet_conflicts,
                          "overlaps": pv.overlaps}, ensure_ascii=False, indent=2))
        return
    sid = schedules.add_schedule(db, actor, cfg.timezone, horizon, bulletin_id=args.bulletin, rule=rule,
                                 dtstart=dtstart, targets=targets, repeat=args.repeat, valid_until=until,
                                 relay_url=args.relay_url, relay_minutes=args.relay_minutes)
    print(sid)


@_guard
def cmd_report(args):
    from . import reports
    from .db import now_ms

    cfg, db, *_ = _ctx(args)
    start = _parse_time(args.start, cfg.timezone) if args.start else now_ms() - 30 * 86_400_000
    end = _parse_time(args.end + " 23:59:59", cfg.timezone) if args.end else now_ms() + 86_400_000
    if args.kind == "outcomes":
        rows = reports.outcomes(db, start, end, group=args.group, device=args.device)
    elif args.kind == "devices":
        rows = reports.device_summary(db, start, end, group=args.group)
    elif args.kind == "offline":
        rows = reports.offline_now(db)
    else:
        if args.bulletin is None:
            from devices.errors import ValidationError

            raise ValidationError(["--bulletin: chọn bản tin cần xem độ phủ"])
        print(json.dumps(reports.coverage(db, args.bulletin), ensure_ascii=False, indent=2))
        return
    if args.json:
        from dataclasses import asdict, is_dataclass

        print(json.dumps([asdict(r) if is_dataclass(r) else r for r in rows], ensure_ascii=False, default=str))
    else:
        sys.stdout.write(reports.to_csv(rows))


@_guard
def cmd_emergency(args):
    from . import schedules
    from .areas import actor_for
    from .service import StationService

    cfg = _cfg(args)
    svc = StationService(cfg, media_port=0)
    try:
        actor = actor_for(svc.db, args.actor)
        svc.mqtt.connect(timeout=10)
        oid = svc.send_emergency(actor, args.bulletin, schedules.Targets(args.all, tuple(args.group),
                                                                          tuple(args.device)), args.reason)
        print(f"đã phát khẩn cấp: {oid}")
    finally:
        svc.mqtt.close()
        svc.db.conn.close()


@_guard
def cmd_alerts(args):
    from .alerts import describe, evaluate, open_alerts

    cfg, db, *_ = _ctx(args)
    evaluate(db, offline_minutes=cfg.offline_alert_minutes, clock_seconds=cfg.clock_alert_seconds,
             failure_count=cfg.failure_alert_count)
    alerts = open_alerts(db)
    if args.json:
        print(json.dumps([a.__dict__ for a in alerts], ensure_ascii=False))
    else:
        for a in alerts:
            print(describe(a))
        print(f"{len(alerts)} cảnh báo đang mở")


@_guard
def cmd_restore(args):
    from .backup import restore
    from .db import open_db

    cfg = _cfg(args)
    target = cfg.data_dir / "station.db"
    kept = restore(args.backup, target)
    open_db(target).conn.close()  # newer migrations apply now, not at the station's start
    print(f"đã khôi phục {target} từ {args.backup}")
    if kept:
        print(f"cơ sở dữ liệu cũ được giữ tại {kept}")


@_guard
def cmd_backup(args):
    from .backup import backup_now

    cfg, db, *_ = _ctx(args)
    print(backup_now(db, cfg.backup.dir or cfg.data_dir / "backups", cfg.backup.keep_days))


@_guard
def cmd_key(args):
    from .service import open_keyring

    print(open_keyring(_cfg(args)).signer.public.to_text())


@_guard
def cmd_key_rotate(args):
    from .areas import audit
    from .db import transaction
    from .service import open_keyring

    cfg, db, _l, _t, actor = _ctx(args)
    ring = open_keyring(cfg)
    new = ring.rotate(int(args.overlap_days * 86_400_000))
    with transaction(db):
        audit(db, actor, "key.rotate", "key", new.kid, {"overlap_days": args.overlap_days})
    print(f"khóa mới {new.kid}: các loa sẽ nhận trong {args.overlap_days:g} ngày; sau đó chạy key-finish")


@_guard
def cmd_key_finish(args):
    from .areas import audit
    from .db import transaction
    from .service import open_keyring

    cfg, db, _l, _t, actor = _ctx(args)
    ring = open_keyring(cfg)
    new = ring.finish_rotation(force=args.force)
    new.save(cfg.signing_key_path)  # the fleet tools read this file
    with transaction(db):
        audit(db, actor, "key.finish", "key", new.kid, {"forced": args.force})
    print(f"đang ký bằng khóa {new.kid}; khóa cũ đã bỏ")
