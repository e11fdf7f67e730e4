"""`thanthien fleet …`: the technician's tools.

Exit status: 0 done; 1 the node refused or failed the command; 2 bad arguments or
config; 3 unknown device; 4 broker unreachable; 5 the node did not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from thanthien.cli import add_command

DEFAULT_CONFIG = Path(os.environ.get("THANTHIEN_FLEET_CONFIG", "/etc/thanthien/fleet.toml"))
EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4, 5


def register(sub: argparse._SubParsersAction) -> None:
    fleet = add_command(sub, "fleet", "technician tools: list, test and manage speaker nodes over MQTT",
                        description=__doc__)
    fleet.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"fleet config file (default {DEFAULT_CONFIG}, or $THANTHIEN_FLEET_CONFIG)")
    cmds = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    ls = add_command(cmds, "ls", "list every node: online, last seen, version, volume, now playing, schedule")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_ls)

    ping = add_command(cmds, "ping", "send a signed ping and print the round-trip time")
    ping.add_argument("device")
    ping.add_argument("--count", type=int, default=1, help="how many pings (default 1)")
    ping.set_defaults(func=cmd_ping)

    vol = add_command(cmds, "volume", "set a node's volume (0-100); the node keeps it across restarts")
    vol.add_argument("device")
    vol.add_argument("level", type=int, help="0-100")
    vol.set_defaults(func=cmd_volume)

    tone = add_command(cmds, "test-tone", "play a test tone on a node")
    tone.add_argument("device")
    tone.add_argument("--seconds", type=float, default=3.0)
    tone.add_argument("--frequency", type=int, default=1000, help="Hz (default 1000)")
    tone.set_defaults(func=cmd_test_tone)

    ident = add_command(cmds, "identify", "make a node beep its identify pattern (to find it on the pole)")
    ident.add_argument("device")
    ident.add_argument("--seconds", type=float, default=5.0)
    ident.set_defaults(func=cmd_identify)

    restart = add_command(cmds, "restart", "restart a node's agent")
    restart.add_argument("device")
    restart.add_argument("--reason", default="technician")
    restart.set_defaults(func=cmd_restart)

    logs = add_command(cmds, "logs", "print a node's last log lines (asked over MQTT)")
    logs.add_argument("device")
    logs.add_argument("-n", "--lines", type=int, default=100)
    logs.set_defaults(func=cmd_logs)

    cfg = add_command(cmds, "config", "show or change a node's retained config")
    cfg_sub = cfg.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    show = add_command(cfg_sub, "show", "print the node's current config (signature verified)")
    show.add_argument("device")
    show.set_defaults(func=cmd_config_show)
    cset = add_command(cfg_sub, "set", "change keys of the node's config and publish a new version",
                       epilog="Keys: volume, max_volume, emergency_volume, telemetry_interval_s, groups (comma "
                              "separated), amp.warmup_ms, amp.tail_ms. Example: config set loa-01 volume=60")
    cset.add_argument("device")
    cset.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    cset.set_defaults(func=cmd_config_set)

    enrol = add_command(cmds, "enrol", "give a new node a broker account and write its ready-to-copy config",
                        epilog="The password is written only into the node's config file (mode 0600); "
                               "it is printed only with --show-secret.")
    enrol.add_argument("device")
    enrol.add_argument("--group", action="append", default=[], required=True, help="group id (repeatable)")
    enrol.add_argument("--out", type=Path, default=Path("."), help="where to write DEVICE.toml (default .)")
    enrol.add_argument("--qr", action="store_true", help="also write DEVICE.png, a QR code of the config")
    enrol.add_argument("--show-secret", action="store_true", help="print the password too")
    enrol.add_argument("--replace", action="store_true", help="re-enrol an existing node with a new password")
    enrol.add_argument("--station-config", type=Path,
                       help="also create the device record in this station (its groups, name)")
    enrol.add_argument("--name", help="the device's name in the station (default: its id)")
    enrol.set_defaults(func=cmd_enrol)

    revoke = add_command(cmds, "revoke", "remove a node's broker account: it is cut off at once")
    revoke.add_argument("device")
    revoke.set_defaults(func=cmd_revoke)

    account = add_command(cmds, "account", "create the broker account of the station, a technician or a kiosk")
    account.add_argument("name")
    account.add_argument("--kind", required=True, choices=["station", "technician", "kiosk"])
    account.add_argument("--password-file", type=Path, help="write the password here (mode 0600)")
    account.add_argument("--show-secret", action="store_true")
    account.add_argument("--replace", action="store_true")
    account.set_defaults(func=cmd_account)

    bcfg = add_command(cmds, "broker-config", "write the ward's Mosquitto config (TLS, no anonymous, ACL)")
    bcfg.add_argument("--out", type=Path, required=True, help="e.g. /etc/mosquitto/conf.d/thanthien.conf")
    bcfg.add_argument("--port", type=int, default=1883, help="plain listener on 127.0.0.1 (default 1883)")
    bcfg.add_argument("--data-dir", type=Path, default=Path("/var/lib/mosquitto"))
    bcfg.add_argument("--user", default="mosquitto")
    bcfg.set_defaults(func=cmd_broker_config)

    certs = add_command(cmds, "certs", "create the ward CA and the broker's TLS certificate")
    certs.add_argument("--host", action="append", default=[], help="names/addresses of the broker (repeatable)")
    certs.set_defaults(func=cmd_certs)


# --- helpers --------------------------------------------------------------------------


def _config(args):
    from devices.config import FleetConfig, load_config

    return load_config(args.config, FleetConfig)


def _fail(code: int, message: str) -> int:
    print(f"thanthien fleet: {message}", file=sys.stderr)
    return code


def _with_client(args, fn, need_key: bool = True) -> int:
    from devices import errors
    from devices.fleet.client import FleetClient, FleetTimeout, UnknownDevice
    from devices.protocol import SigningKey

    cfg = _config(args)
    key = None
    if need_key:
        try:
            key = SigningKey.load(cfg.signing_key)
        except errors.StorageError as exc:
            return _fail(EXIT_USAGE, f"{exc}; set signing_key in {args.config}")
    try:
        with FleetClient(cfg.site, cfg.mqtt, key) as client:
            client.connect(timeout=cfg.timeout_s)
            return fn(client, cfg) or 0
    except UnknownDevice as exc:
        return _fail(EXIT_UNKNOWN, str(exc))
    except FleetTimeout as exc:
        return _fail(EXIT_TIMEOUT, str(exc))
    except errors.InvalidIdentifier as exc:
        return _fail(EXIT_USAGE, exc.detail)
    except errors.PublishRefused as exc:
        return _fail(EXIT_REFUSED, f"{exc} (does the account in {args.config} have the right ACL?)")
    except errors.MqttError as exc:
        return _fail(EXIT_UNREACHABLE, str(exc))


def _report(result) -> int:
    from devices.protocol import AckStatus

    if result.status is AckStatus.DONE:
        print(f"{result.device_id}: xong ({result.round_trip_ms:.0f} ms)")
        return 0
    why = result.reason or "không rõ"
    return _fail(EXIT_REFUSED, f"{result.device_id} từ chối lệnh: {why}" + (f" — {result.detail}" if result.detail else ""))


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise SystemExit(_fail(EXIT_USAGE, f"{name} must be between {lo:g} and {hi:g}, got {value:g}"))


# --- MQTT commands --------------------------------------------------------------------


def cmd_ls(args) -> int:
    import datetime as dt

    def run(client, cfg):
        nodes = client.snapshot(settle_s=0.3, max_wait_s=cfg.timeout_s)
        if args.json:
            print(json.dumps([n.as_dict() for n in nodes], ensure_ascii=False, indent=2))
            return 0
        header = f"{'THIẾT BỊ':<20} {'NHÓM':<14} {'TRẠNG THÁI':<10} {'LẦN CUỐI':<19} {'PHIÊN BẢN':<10} {'ÂM LƯỢNG':>8}  {'ĐANG PHÁT':<20} LỊCH"
        print(header)
        for n in nodes:
            seen = dt.datetime.fromtimestamp(n.last_seen_ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if n.last_seen_ms else "-"
            state = {True: "online", False: "offline", None: "?"}[n.online]
            sched = ",".join(f"{k.split('/')[-1]}:v{v}" for k, v in sorted(n.schedule_versions.items())) or "-"
            print(f"{n.device_id:<20} {','.join(n.groups) or '-':<14} {state:<10} {seen:<19} {n.version or '-':<10} "
                  f"{'-' if n.volume is None else n.volume:>8}  {(n.now_playing or '-')[:20]:<20} {sched}")
        print(f"{len(nodes)} thiết bị, {sum(1 for n in nodes if n.online)} online")
        return 0

    return _with_client(args, run, need_key=False)


def cmd_ping(args) -> int:
    from devices.protocol import MessageType

    _range("--count", args.count, 1, 1000)

    def run(client, cfg):
        worst = 0
        for i in range(args.count):
            r = client.send(args.device, MessageType.PING, {"nonce": str(i)}, timeout=cfg.timeout_s)
            if (rc := _report(r)) != 0:
                worst = rc
        return worst

    return _with_client(args, run)


def cmd_volume(args) -> int:
    from devices.protocol import MessageType

    _range("level", args.level, 0, 100)
    return _with_client(args, lambda c, cfg: _report(c.send(args.device, MessageType.VOLUME, {"volume": args.level},
                                                             timeout=cfg.timeout_s)))


def cmd_test_tone(args) -> int:
    from devices.protocol import MessageType

    _range("--seconds", args.seconds, 0.1, 60)
    _range("--frequency", args.frequency, 50, 8000)
    body = {"duration_ms": int(args.seconds * 1000), "frequency_hz": args.frequency}
    return _with_client(args, lambda c, cfg: _report(c.send(args.device, MessageType.TEST_TONE, body,
                                                             timeout=cfg.timeout_s + args.seconds + 5)))


def cmd_identify(args) -> int:
    from devices.protocol import MessageType

    _range("--seconds", args.seconds, 0.5, 60)
    body = {"duration_ms": int(args.seconds * 1000)}
    return _with_client(args, lambda c, cfg: _report(c.send(args.device, MessageType.IDENTIFY, body,
                                                             timeout=cfg.timeout_s + args.seconds + 5)))


def cmd_restart(args) -> int:
    from devices.protocol import AckStatus, MessageType

    def run(client, cfg):
        r = client.send(args.device, MessageType.RESTART, {"reason": args.reason[:200]}, timeout=cfg.timeout_s,
                        until=(AckStatus.ACCEPTED, AckStatus.DONE, AckStatus.REJECTED, AckStatus.FAILED))
        if r.status in (AckStatus.ACCEPTED, AckStatus.DONE):
            print(f"{args.device}: đang khởi động lại")
            return 0
        return _report(r)

    return _with_client(args, run)


def cmd_logs(args) -> int:
    _range("--lines", args.lines, 1, 2000)

    def run(client, cfg):
        for line in client.logs(args.device, args.lines, timeout=cfg.timeout_s):
            print(line)
        return 0

    return _with_client(args, run)


def cmd_config_show(args) -> int:
    from devices import errors
    from devices.typed import unstructure

    def run(client, cfg):
        try:
            env = client.read_config(args.device, timeout=cfg.timeout_s)
        except errors.ProtocolError as exc:
            return _fail(EXIT_REFUSED, f"the retained config of {args.device} is not valid: {exc}")
        if env is None:
            return _fail(EXIT_UNKNOWN, f"{args.device} has no config on the broker")
        print(json.dumps({"version": env.body.version, "issued_at": env.issued_at, "kid": env.kid,
                          "config": unstructure(env.body)}, ensure_ascii=False, indent=2))
        return 0

    return _with_client(args, run)


CONFIG_INT_KEYS = {"volume", "max_volume", "emergency_volume", "telemetry_interval_s"}


def apply_assignments(body, assignments: list[str]):
    """A new ConfigBody with KEY=VALUE changes and the version bumped; ValidationError names the key."""
    import dataclasses

    from devices import protocol as p
    from devices.errors import ValidationError
    from devices.typed import structure, unstructure

    data = unstructure(body)
    problems = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            problems.append(f"{item!r}: write KEY=VALUE")
        elif key in CONFIG_INT_KEYS or key in ("amp.warmup_ms", "amp.tail_ms"):
            try:
                number = int(value)
            except ValueError:
                problems.append(f"{key}: expected an integer, got {value!r}")
                continue
            if key.startswith("amp."):
                data.setdefault("amp", {})[key[4:]] = number
            else:
                data[key] = number
        elif key == "groups":
            data["groups"] = [g.strip() for g in value.split(",") if g.strip()]
        else:
            problems.append(f"{key}: cannot be set here (allowed: {', '.join(sorted(CONFIG_INT_KEYS))}, groups, "
                            "amp.warmup_ms, amp.tail_ms)")
    if problems:
        raise ValidationError(problems)
    data["version"] = body.version + 1
    new = structure(p.ConfigBody, data, source="config")
    return dataclasses.replace(new)


def cmd_config_set(args) -> int:
    from devices import errors

    def run(client, cfg):
        env = client.read_config(args.device, timeout=cfg.timeout_s)
        if env is None:
            return _fail(EXIT_UNKNOWN, f"{args.device} has no config on the broker; enrol it on the station first")
        try:
            new = apply_assignments(env.body, args.assignments)
        except errors.ValidationError as exc:
            return _fail(EXIT_USAGE, str(exc))
        client.publish_config(new, timeout=cfg.timeout_s)
        print(f"{args.device}: config version {new.version} published")
        return 0

    return _with_client(args, run)


# --- broker administration -------------------------------------------------------------


def _registry(cfg):
    from devices.fleet.registry import BrokerRegistry

    return BrokerRegistry(cfg.site, cfg.broker.dir, cfg.broker.reload_command)


def node_config_toml(cfg, device_id: str, password: str, public_key: str) -> str:
    from devices.config import toml_string as _toml_str

    host = cfg.broker.public_host
    return (
        "# Generated by `thanthien fleet enrol` — copy to /etc/thanthien/speaker.toml on the node.\n"
        "# Holds the node's broker password: keep it secret (mode 0600).\n"
        f"site = {_toml_str(cfg.site)}\n"
        f"device_id = {_toml_str(device_id)}\n"
        'data_dir = "/var/lib/thanthien/speaker"\n'
        f"station_keys = [{_toml_str(public_key)}]\n\n"
        f"[mqtt]\nhost = {_toml_str(host)}\nport = {cfg.broker.tls_port}\n"
        f"username = {_toml_str(device_id)}\npassword = {_toml_str(password)}\n\n"
        '[mqtt.tls]\nca_file = "/etc/thanthien/ca.crt"\n\n'
        '[audio]\nsink = "pyaudio"\ndevice = "default"\n\n'
        "[amp]\npin = 17\n"
    )


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _add_account(cfg, name: str, kind, groups: list[str], replace: bool):
    """Registry add with the fleet's error handling: (enrolment, 0) or (None, exit status)."""
    from devices import errors
    from devices.protocol import validate_id

    try:
        validate_id(name, "device id" if groups else "account name")
        for g in groups:
            validate_id(g, "group id")
        return _registry(cfg).add(name, kind, groups, replace=replace), 0
    except errors.ProtocolError as exc:
        return None, _fail(EXIT_USAGE, exc.detail)
    except (errors.ValidationError, errors.StorageError) as exc:
        return None, _fail(EXIT_USAGE, str(exc))


def cmd_enrol(args) -> int:
    from devices import errors
    from devices.fleet.broker_auth import AccountKind
    from devices.protocol import SigningKey

    cfg = _config(args)
    try:
        key = SigningKey.load(cfg.signing_key)
    except errors.StorageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    enrolment, rc = _add_account(cfg, args.device, AccountKind.DEVICE, args.group, args.replace)
    if enrolment is None:
        return rc
    if args.station_config:
        # through the station's own command: the fleet tools never import the station
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "thanthien", "station", "--config", str(args.station_config), "device-add",
               args.device, "--name", args.name or args.device]
        for g in args.group:
            cmd += ["--group", g]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            _registry(cfg).revoke(args.device)  # all or nothing: no broker account without its record
            return _fail(EXIT_USAGE, f"the station refused the device: {done.stderr.strip()}")
        print(f"  {done.stdout.strip()}")
    toml = node_config_toml(cfg, args.device, enrolment.password, key.public.to_text())
    out = args.out / f"{args.device}.toml"
    _write_secret(out, toml)
    print(f"{args.device}: tài khoản broker đã tạo (nhóm {', '.join(enrolment.account.groups)})")
    print(f"  cấu hình cho loa: {out} (chép vào /etc/thanthien/speaker.toml trên loa, kèm {cfg.broker.dir / 'certs' / 'ca.crt'})")
    if args.qr:
        import qrcode

        png = args.out / f"{args.device}.png"
        qrcode.make(toml).save(png)
        os.chmod(png, 0o600)
        print(f"  mã QR của cấu hình: {png}")
    if args.show_secret:
        print(f"  mật khẩu MQTT: {enrolment.password}")
    return 0


def cmd_revoke(args) -> int:
    from devices import errors

    cfg = _config(args)
    try:
        acc = _registry(cfg).revoke(args.device)
    except errors.ValidationError as exc:
        return _fail(EXIT_UNKNOWN, str(exc))
    except errors.StorageError as exc:
        return _fail(EXIT_REFUSED, str(exc))
    print(f"{acc.name}: đã thu hồi quyền truy cập broker")
    return 0


def cmd_account(args) -> int:
    from devices.fleet.broker_auth import AccountKind

    cfg = _config(args)
    enrolment, rc = _add_account(cfg, args.name, AccountKind(args.kind), [], args.replace)
    if enrolment is None:
        return rc
    print(f"{args.name}: tài khoản {args.kind} đã tạo")
    if args.password_file:
        _write_secret(args.password_file, enrolment.password + "\n")
        print(f"  mật khẩu ghi vào {args.password_file}")
    if args.show_secret:
        print(f"  mật khẩu MQTT: {enrolment.password}")
    return 0


def cmd_broker_config(args) -> int:
    from devices.broker import PROJECT_ROOT

    cfg = _config(args)
    d = cfg.broker.dir
    template = (PROJECT_ROOT / "config" / "mosquitto" / "thanthien.conf.in").read_text("utf-8")
    text = template.format(port=args.port, tls_port=cfg.broker.tls_port, tls_bind="0.0.0.0", user=args.user,
                           password_file=d / "passwd", acl_file=d / "acl", cafile=d / "certs" / "ca.crt",
                           certfile=d / "certs" / "server.crt", keyfile=d / "certs" / "server.key",
                           data_dir=args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, "utf-8")
    print(f"wrote {args.out}")
    return 0


def cmd_certs(args) -> int:
    from devices.fleet.certs import create_ca_and_server

    cfg = _config(args)
    hosts = args.host or [cfg.broker.public_host, "localhost", "127.0.0.1"]
    paths = create_ca_and_server(cfg.broker.dir / "certs", hosts)
    print(f"CA: {paths.ca_cert}\nserver certificate: {paths.server_cert} for {', '.join(hosts)}")
    return 0
