"""The station process: dispatcher, ingest of node reports, media HTTP server.

- Dispatcher: every few seconds expands schedules into occurrences up to the horizon
  and publishes, for each group and each device, a signed retained schedule document
  whose version grows whenever its content changes; device configs likewise. A node
  whose status shows an older version than the current one gets the document again.
- Ingest: node status / telemetry / acks / events go through one queue into SQLite,
  written by one thread (events are idempotent by their uuid).
- Immediate commands (emergency) go to all/cmd, group or device cmd topics at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time

from devices import errors
from devices import protocol as p
from devices.mqtt import MqttClient, OutgoingMessage
from devices.typed import unstructure

from . import areas, bulletins, schedules
from .config import StationConfig
from .db import now_ms, open_db, transaction
from .media import MediaLibrary, MediaServer
from .tts import TextToSpeech

log = logging.getLogger("thanthien.station")

DISPATCH_POLL_S = 0.25
ALERT_INTERVAL_S = 15.0
PAST_MARGIN_MS = 10 * 60_000  # keep just-started occurrences in documents
TELEMETRY_HISTORY_MS = 5 * 60_000  # one telemetry sample per node kept every 5 minutes


class StationService:
    def __init__(self, cfg: StationConfig, *, media_port: int | None = None):
        self.cfg = cfg
        self.topics = p.Topics(cfg.site)
        self.db = open_db(cfg.data_dir / "station.db")
        self.library = MediaLibrary(self.db, cfg.data_dir / "media", cfg.http.max_upload_bytes)
        self.tts = TextToSpeech.from_settings(cfg.data_dir / "tts-cache", cfg.tts)
        self.keyring = open_keyring(cfg)
        self.horizon_ms = cfg.schedule_horizon_h * 3600 * 1000
        self._media_port = cfg.http.port if media_port is None else media_port
        self.media_server: MediaServer | None = None
        status = self.topics.station_status()
        self.mqtt = MqttClient(cfg.mqtt, f"station-{cfg.site}",
                               birth=OutgoingMessage(status, b'{"state":"online"}', 1, True),
                               will=OutgoingMessage(status, b'{"state":"offline"}', 1, True))
        self._ingest: queue.Queue = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._db_lock = threading.RLock()

    @property
    def key(self) -> p.SigningKey:
        """The key everything is signed with now (the old one during a rotation's overlap)."""
        return self.keyring.signer

    # --- lifecycle --------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.cfg.http.public_url:
            return self.cfg.http.public_url.rstrip("/")
        host = "127.0.0.1" if self.cfg.http.host in ("0.0.0.0", "::") else self.cfg.http.host
        port = self.media_server.port if self.media_server else self._media_port
        return f"http://{host}:{port}"

    def start(self) -> "StationService":
        self.media_server = MediaServer(self.library.dir, self.cfg.http.host, self._media_port).start()
        for ch in (p.Channel.STATUS, p.Channel.TELEMETRY, p.Channel.ACK, p.Channel.EVENTS):
            self.mqtt.subscribe(self.topics.devices_filter(ch), self._on_report)
        self.mqtt.add_connect_listener(self._wake.set)
        self.mqtt.start()
        for name, fn in (("ingest", self._ingest_loop), ("dispatch", self._dispatch_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("station %s started; media at %s", self.cfg.site, self.public_url)
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(5)
        self.mqtt.close()
        if self.media_server:
            self.media_server.close()
        self.db.conn.close()

    def healthy(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    # --- documents ----------------------------------------------------------------------

    def _media_ref(self, sha: str, db=None) -> dict:
        info = (self.library_for(db) if db is not None else self.library).get(sha)
        return {"url": f"{self.public_url}/media/{sha}", "sha256": sha, "bytes": info.bytes}

    def _items_for(self, target: str) -> list[dict]:
        scope, _, ident = target.partition("/")
        lo, hi = now_ms() - PAST_MARGIN_MS, now_ms() + self.horizon_ms
        rows = self.db.execute(
            "SELECT o.id, o.start_at, o.end_at, o.priority, s.kind, s.targets, s.repeat, s.relay_url, "
            "b.id, b.title, b.audio_sha256 FROM occurrences o JOIN schedules s ON s.id = o.schedule_id "
            "LEFT JOIN bulletins b ON b.id = o.bulletin_id WHERE o.cancelled = 0 AND o.start_at BETWEEN ? AND ? "
            "ORDER BY o.start_at, o.id", [lo, hi]).fetchall()
        grouped = {g for (g,) in self.db.execute("SELECT DISTINCT device_id FROM device_groups")}
        items = []
        for oid, start, end, prio, kind, targets_json, repeat, relay_url, bid, title, audio in rows:
            t = schedules.Targets.from_json(targets_json)
            if scope == "groups":
                wanted = t.all or ident in t.groups
            else:
                wanted = ident in t.devices or (t.all and ident not in grouped)
            if not wanted:
                continue
            item = {"occurrence_id": oid, "start_at": start, "priority": prio, "kind": kind, "repeat": repeat}
            if bid is not None:
                item["broadcast_id"] = f"b{bid}"
                item["title"] = title[:200]
            if kind == "relay":
                item.update(url=relay_url, until=end)
            else:
                if not audio:
                    continue
                item["media"] = self._media_ref(audio)
            items.append(item)
        return items

    def _publish_document(self, target: str, msg_type: p.MessageType, body_fn, force: bool = False) -> int:
        """Publish a retained document if its content changed; returns its version."""
        content = body_fn(None)
        digest = hashlib.sha256(p.canonical_json(content)).hexdigest()
        # a device has two documents (config and schedule): they are versioned apart
        key = f"config:{target}" if msg_type is p.MessageType.CONFIG else target
        row = self.db.execute("SELECT version, digest FROM documents WHERE target = ?", [key]).fetchone()
        if row and row[1] == digest and not force:
            return row[0]
        version = row[0] + (0 if row and row[1] == digest else 1) if row else 1
        body = body_fn(version)
        ttl = None if msg_type is p.MessageType.CONFIG else self.horizon_ms + 24 * 3600 * 1000
        payload = p.encode_envelope(self.key, msg_type, body, ttl_ms=ttl)
        scope, _, ident = target.partition("/")
        channel = p.Channel.CONFIG if msg_type is p.MessageType.CONFIG else p.Channel.SCHEDULE
        topic = self.topics.group(ident, channel) if scope == "groups" else self.topics.device(ident, channel)
        # on disk first: a restart republishes the same version instead of forgetting it
        with self._db_lock, transaction(self.db):
            self.db.execute("INSERT INTO documents (target, version, digest, published_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(target) DO UPDATE SET version = excluded.version, digest = excluded.digest, "
                            "published_at = excluded.published_at", [key, version, digest, now_ms()])
        self.mqtt.publish(topic, payload, retain=True)
        log.info("published %s %s version %d", msg_type.value, target, version)
        return version

    def _schedule_body(self, target: str):
        items = self._items_for(target)

        def body(version):
            return {"version": version or 0, "target": target, "horizon_end": now_ms() + self.horizon_ms,
                    "items": items} if version else {"target": target, "items": items}
        return body

    def _config_body(self, device_id: str):
        row = self.db.execute("SELECT volume, max_volume, emergency_volume, warmup_ms, tail_ms FROM devices WHERE id = ?",
                              [device_id]).fetchone()
        groups = areas.device_groups(self.db, device_id)
        quiet = [{"start": qs, "end": qe} for qs, qe in self.db.execute(
            "SELECT quiet_start, quiet_end FROM groups WHERE code IN (SELECT group_code FROM device_groups "
            "WHERE device_id = ?) AND quiet_start IS NOT NULL", [device_id])]
        content = {"device_id": device_id, "groups": groups, "volume": row[0], "max_volume": row[1],
                   "emergency_volume": row[2], "quiet_hours": quiet[:8],
                   "amp": {"warmup_ms": row[3], "tail_ms": row[4]},
                   "trusted_keys": [unstructure(k) for k in self.keyring.trusted_keys()]}

        def body(version):
            return {**content, "version": version} if version else content
        return body

    def _refresh_keyring(self) -> None:
        """Pick up a rotation started or finished from the CLI."""
        from devices.keyring import Keyring

        mtime = self.keyring.state_path.stat().st_mtime_ns
        if mtime != getattr(self, "_keyring_mtime", mtime):
            self.keyring = Keyring(self.keyring.dir)
            log.info("signing keys changed: now signing with %s", self.keyring.signer.kid)
        self._keyring_mtime = mtime

    def dispatch_once(self, force: bool = False) -> None:
        self._refresh_keyring()
        with self._db_lock, transaction(self.db):
            schedules.expand_into(self.db, self.cfg.timezone, self.horizon_ms)
        if not self.mqtt.connected:
            return
        # Groups first: one group document reaches most nodes, and the per-device documents
        # (a config and a schedule for each of possibly 1,000 nodes) take longer to check.
        for g in areas.all_groups(self.db):
            target = f"groups/{g['code']}"
            self._publish_document(target, p.MessageType.SCHEDULE, self._schedule_body(target), force)
        for device_id in areas.all_devices(self.db):
            self._publish_document(f"devices/{device_id}", p.MessageType.CONFIG, self._config_body(device_id), force)
            self._publish_document(f"devices/{device_id}", p.MessageType.SCHEDULE,
                                   self._schedule_body(f"devices/{device_id}"), force)

    def check_alerts(self) -> list:
        """Open/close alerts; publish the new ones to the configured monitoring topic."""
        from .alerts import describe, evaluate

        with self._db_lock:
            opened = evaluate(self.db, offline_minutes=self.cfg.offline_alert_minutes,
                              clock_seconds=self.cfg.clock_alert_seconds, failure_count=self.cfg.failure_alert_count)
        for a in opened:
            log.warning("alert: %s", describe(a))
            if self.cfg.alerts_topic and self.mqtt.connected:
                self.mqtt.publish(self.cfg.alerts_topic, json.dumps(
                    {"site": self.cfg.site, "device_id": a.device_id, "kind": a.kind, "opened_at": a.opened_at,
                     "detail": a.detail, "text": describe(a)}, ensure_ascii=False))
        return opened

    def _dispatch_loop(self) -> None:
        """Dispatch at start, whenever another process commits to the database (the CLI,
        the console: PRAGMA data_version changes), on reconnect, and every 30 s."""
        first = True
        seen_version = None
        last = 0.0
        last_alerts = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_alerts > ALERT_INTERVAL_S:
                last_alerts = time.monotonic()
                try:
                    self.check_alerts()
                except Exception:
                    log.exception("alert check failed")
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            if version != seen_version or self._wake.is_set() or time.monotonic() - last > 30:
                self._wake.clear()
                seen_version, last = version, time.monotonic()
                try:
                    self.dispatch_once(force=first and self.mqtt.connected)
                    if self.mqtt.connected:
                        first = False
                except Exception:
                    log.exception("dispatch failed; retrying")
            self._wake.wait(DISPATCH_POLL_S)

    def documents_for(self, device_id: str) -> dict[str, int]:
        """Targets a device should hold, with their current versions."""
        targets = [f"devices/{device_id}"] + [f"groups/{g}" for g in areas.device_groups(self.db, device_id)]
        out = {}
        for t in targets:
            row = self.db.execute("SELECT version FROM documents WHERE target = ?", [t]).fetchone()
            if row:
                out[t] = row[0]
        return out

    # --- immediate commands -----------------------------------------------------------

    def send_emergency(self, actor: areas.Actor, bulletin_id: int, targets: schedules.Targets, reason: str,
                       db=None) -> str:
        """Approve (with the typed reason), record and send an emergency at once; returns
        its occurrence id once the broker holds every command. ``db`` is the caller's
        connection when it is not the service's own thread (the web console)."""
        import uuid

        db = db if db is not None else self.db
        b = bulletins.approve_emergency_now(db, self.library_for(db), self.tts, actor, bulletin_id, reason,
                                            self.cfg.allow_operator_emergency)
        start = now_ms()
        oid = schedules.emergency_now(db, actor, b, targets, start)
        body = {"media": self._media_ref(b.audio_sha256, db), "broadcast_id": f"b{b.id}", "occurrence_id": oid,
                "title": b.title[:200]}
        if targets.all:
            topics = [("all", self.topics.all_cmd())]
        else:
            topics = [(f"groups/{g}", self.topics.group(g, p.Channel.CMD)) for g in targets.groups]
            topics += [(f"devices/{d}", self.topics.device(d, p.Channel.CMD)) for d in targets.devices]
        sent = []
        for target, topic in topics:
            cmd_id = str(uuid.uuid4())
            payload = p.encode_envelope(self.key, p.MessageType.PLAY, body, priority=p.Priority.EMERGENCY,
                                        ttl_ms=10 * 60_000, msg_id=cmd_id)
            sent.append((cmd_id, target, topic, payload))
        with transaction(db):
            for cmd_id, target, _topic, _payload in sent:
                db.execute("INSERT INTO commands VALUES (?, 'play', ?, ?, ?, ?)",
                           [cmd_id, target, oid, actor.username, start])
        handles = [self.mqtt.publish(topic, payload) for _c, _t, topic, payload in sent]
        for h in handles:
            h.wait(10)  # the broker has it before we say it went out
        return oid

    def send_command(self, actor: areas.Actor, device_id: str, msg_type: p.MessageType, body: dict,
                     db=None) -> str:
        """A technician's signed command to one node (test tone, identify, restart,
        volume); recorded and audited, its ack arrives through ingest. Returns the cmd id."""
        import uuid

        from devices.errors import ValidationError

        db = db if db is not None else self.db
        if actor.role not in (areas.Role.TECHNICIAN, areas.Role.ADMIN):
            raise ValidationError(["quyền: chỉ kỹ thuật viên được gửi lệnh tới loa"])
        if db.execute("SELECT 1 FROM devices WHERE id = ?", [device_id]).fetchone() is None:
            raise ValidationError([f"loa: không có loa {device_id!r}"])
        if not self.mqtt.connected:
            raise ValidationError(["trạm: chưa kết nối được MQTT broker, thử lại sau"])
        cmd_id = str(uuid.uuid4())
        payload = p.encode_envelope(self.key, msg_type, body, msg_id=cmd_id, ttl_ms=60_000)
        with transaction(db):
            db.execute("INSERT INTO commands VALUES (?, ?, ?, NULL, ?, ?)",
                       [cmd_id, msg_type.value, f"devices/{device_id}", actor.username, now_ms()])
            areas.audit(db, actor, f"device.{msg_type.value}", "device", device_id, {"cmd_id": cmd_id, **body})
        self.mqtt.publish(self.topics.device(device_id, p.Channel.CMD), payload).wait(10)
        return cmd_id

    def library_for(self, db) -> MediaLibrary:
        return self.library if db is self.db else MediaLibrary(db, self.library.dir, self.library.max_bytes)

    # --- ingest -------------------------------------------------------------------------

    def _on_report(self, msg) -> None:
        try:
            self._ingest.put_nowait((msg.topic, msg.payload))
        except queue.Full:
            log.error("ingest queue full; a report from %s was dropped", msg.topic)

    def _ingest_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._ingest.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._ingest.get_nowait())
                except queue.Empty:
                    break
            republish: set[str] = set()
            with self._db_lock, transaction(self.db):
                for topic, payload in batch:
                    try:
                        republish |= ingest_report(self.db, self.topics, topic, payload, self.documents_for)
                    except errors.ProtocolError as exc:
                        log.warning("dropped report on %s: %s", topic[:120], exc)
            for target in republish:
                self._republish(target)

    def _republish(self, target: str) -> None:
        """A node came back holding an old version: send the current document again."""
        self._publish_document(target, p.MessageType.SCHEDULE, self._schedule_body(target), force=True)


def open_keyring(cfg: StationConfig):
    """The station's keys: station.key is adopted on first use; it always holds the signer,
    so the fleet tools (which read that file) sign with the same key as the station."""
    from devices.keyring import Keyring

    p.SigningKey.load_or_create(cfg.signing_key_path)
    return Keyring.adopt(cfg.data_dir / "keys", cfg.signing_key_path)


def ingest_report(db, topics: p.Topics, topic: str, payload: bytes, documents_for) -> set[str]:
    """Store one node report (idempotent); returns targets to republish for that node."""
    ref = topics.parse(topic)
    if ref.scope is not p.Scope.DEVICE or not payload:
        return set()
    device = ref.target
    now = now_ms()
    if ref.channel is p.Channel.TELEMETRY:
        try:
            tel = json.loads(payload)
        except ValueError:
            raise errors.MalformedMessage("telemetry is not JSON") from None
        if not isinstance(tel, dict):
            raise errors.InvalidBody("telemetry must be an object")
        db.execute("INSERT INTO device_state (device_id, online, since, last_seen, version, telemetry) "
                   "VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET last_seen = excluded.last_seen, "
                   "telemetry = excluded.telemetry, version = COALESCE(excluded.version, device_state.version)",
                   [device, now, now, str(tel.get("version"))[:40] if tel.get("version") else None,
                    json.dumps(tel, ensure_ascii=False)[:20_000]])
        last = db.execute("SELECT MAX(at) FROM telemetry_history WHERE device_id = ?", [device]).fetchone()[0]
        if last is None or now - last >= TELEMETRY_HISTORY_MS:
            db.execute("INSERT INTO telemetry_history VALUES (?, ?, ?)",
                       [device, now, json.dumps(tel, ensure_ascii=False)[:20_000]])
        return set()
    report = p.parse_report(ref.channel, payload)
    if ref.channel is p.Channel.STATUS:
        online = report.state is p.NodeState.ONLINE
        prev = db.execute("SELECT online FROM device_state WHERE device_id = ?", [device]).fetchone()
        if prev is None or bool(prev[0]) != online:
            db.execute("INSERT INTO status_history VALUES (?, ?, ?)", [device, int(online), report.at])
        db.execute("INSERT INTO device_state (device_id, online, since, last_seen, version) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(device_id) DO UPDATE SET since = CASE WHEN device_state.online != excluded.online "
                   "THEN excluded.since ELSE device_state.since END, online = excluded.online, "
                   "last_seen = excluded.last_seen, version = COALESCE(excluded.version, device_state.version)",
                   [device, int(online), report.at, now, report.version])
        stale = set()
        if online and report.schedule_versions is not None:
            held = report.schedule_versions
            for target, version in documents_for(device).items():
                if held.get(target, 0) < version:
                    stale.add(target)
            for target, version in held.items():
                db.execute("INSERT INTO device_documents VALUES (?, ?, ?, ?) ON CONFLICT(device_id, target) DO UPDATE "
                           "SET version = excluded.version, at = excluded.at", [device, target, version, now])
        return stale
    if ref.channel is p.Channel.ACK:
        db.execute("INSERT INTO acks VALUES (?, ?, ?, ?, ?)", [report.cmd_id, device, report.status.value,
                                                             report.reason, report.at])
        res = report.result or {}
        if report.type == "schedule" and isinstance(res.get("target"), str) and isinstance(res.get("version"), int):
            db.execute("INSERT INTO device_documents VALUES (?, ?, ?, ?) ON CONFLICT(device_id, target) DO UPDATE "
                       "SET version = MAX(device_documents.version, excluded.version), at = excluded.at",
                       [device, res["target"], res["version"], now])
        return set()
    if ref.channel is p.Channel.EVENTS:
        db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [report.id, device, report.type.value, report.at, report.occurrence_id, report.broadcast_id,
                    report.started_at, report.ended_at, report.duration_ms, report.volume, report.reason, now])
    return set()


def run(cfg: StationConfig, notify=None) -> int:
    """`thanthien station --config FILE`: run until SIGTERM."""
    import signal

    svc = StationService(cfg).start()
    web = None
    if cfg.web.enabled:
        from .web import WebServer

        try:
            web = WebServer(svc).start()
        except (RuntimeError, OSError) as exc:  # playback goes on without the console; say so loudly
            log.error("the web console did not start: %s", exc)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    if notify:
        notify("READY=1")
    last_backup = 0.0
    try:
        while not stop.wait(1.0):
            if notify and svc.healthy():
                notify("WATCHDOG=1")
            if time.monotonic() - last_backup > 24 * 3600:
                from .backup import backup_now

                try:
                    backup_now(svc.db, cfg.backup.dir or cfg.data_dir / "backups", cfg.backup.keep_days)
                except errors.ThanthienError as exc:
                    log.error("daily backup failed: %s", exc)
                last_backup = time.monotonic()
    finally:
        if notify:
            notify("STOPPING=1")
        if web is not None:
            web.close()
        svc.close()
    return 0
