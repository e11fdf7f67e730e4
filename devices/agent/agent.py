"""The speaker-node agent: obeys signed commands, plays its schedule by its own clock.

Threads, each with one job:
- MQTT network thread (devices.mqtt): only queues inbound messages;
- worker: verifies and executes messages in order;
- scheduler: fires occurrences from the local SQLite schedule at their time, with no
  network needed, and reports the ones missed while the node was off;
- prefetcher: downloads media as soon as a schedule or command names it;
- outbox: publishes events QoS 1 and deletes each only after the broker's PUBACK;
- player (devices.agent.player): the audio output and the amplifier;
- main thread: telemetry, systemd watchdog, signals.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from thanthien.timesync import kernel_synchronized

from .. import errors
from .. import protocol as p
from ..audio import decode_file, identify_pattern, open_sink, tone
from ..config import SpeakerConfig
from ..gpio import AmpRelay, NoRelay
from ..keyring import trust_from_config
from ..mqtt import MqttClient, OutgoingMessage
from ..typed import structure, unstructure
from .media import MediaCache
from .player import ItemKind, Outcome, Player, PlayItem
from .store import AgentStore

log = logging.getLogger("thanthien.speaker")

LOOKAHEAD_MS = 3000      # decode and stage an occurrence this long before it starts
GRACE_MS = 2000          # an occurrence this late still plays (slow start, clock step)
EXIT_RESTART = 75        # asks systemd (Restart=always) for a fresh start


def agent_version() -> str:
    from thanthien import __version__

    return __version__


class LogRing(logging.Handler):
    """The last lines of the agent's log, for the `logs` command."""

    def __init__(self, size: int = 2000):
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log handler must never raise
            pass


def cpu_temperature() -> float | None:
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


class Agent:
    def __init__(self, config: SpeakerConfig, *, pin_factory=None, http_session=None):
        self.cfg = config
        self.topics = p.Topics(config.site)
        self.started = time.monotonic()
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = AgentStore(self.data_dir / "agent.db")
        self.replay = p.SqliteReplayStore(self.data_dir / "replay.db")
        self.node_config: p.ConfigBody | None = self._load_node_config()
        self.verifier = p.Verifier(self._trusted_keys(), replay=self.replay,
                                   max_skew_ms=config.max_clock_skew_s * 1000)
        audio = config.audio
        self.media = MediaCache(self.data_dir / "media", self.store, max_bytes=config.cache.max_bytes,
                                max_media_bytes=config.cache.max_media_bytes,
                                timeout_s=config.cache.download_timeout_s, session=http_session,
                                validate=lambda path: decode_file(path, 8000, 1) and None)
        self.sink = open_sink(audio.sink, device=audio.device, sample_rate=audio.sample_rate,
                              channels=audio.channels, buffer_ms=audio.buffer_ms)
        amp = config.amp
        if amp.pin is not None:
            self.amp = AmpRelay(amp.pin, active_high=amp.active_high, warmup_ms=amp.warmup_ms, tail_ms=amp.tail_ms,
                                pin_factory=pin_factory)
        else:
            self.amp = NoRelay()
        self.player = Player(self.sink, self.amp, volume=self.volume, emergency_volume=self.emergency_volume,
                             max_volume=self.max_volume, fade_ms=audio.fade_ms, on_event=self._player_event)
        status_topic = self.topics.device(config.device_id, p.Channel.STATUS)
        offline = p.encode_report(p.StatusReport(state=p.NodeState.OFFLINE, at=p.now_ms(), version=agent_version(),
                                                 reason="connection lost"))
        self.mqtt = MqttClient(config.mqtt, config.device_id, will=OutgoingMessage(status_topic, offline, 1, True))
        self.mqtt.add_connect_listener(self._on_connect)
        self._inbox: queue.Queue = queue.Queue(maxsize=1000)
        self._downloads: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._schedule_changed = threading.Event()
        self._outbox_wake = threading.Event()
        self._subscribed_groups: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._pcm_cache: dict[str, bytes] = {}
        self._handed_over: set[str] = set()  # occurrences given to the player in this run
        self.exit_code = 0
        self._closed = False
        self.log_ring = LogRing()
        logging.getLogger().addHandler(self.log_ring)

    # --- settings that the station may change --------------------------------------

    def volume(self) -> int:
        return int(self.store.get("volume", self.cfg.volume))

    def emergency_volume(self) -> int:
        return self.node_config.emergency_volume if self.node_config else self.cfg.emergency_volume

    def max_volume(self) -> int:
        return self.node_config.max_volume if self.node_config else 100

    def groups(self) -> list[str]:
        return list(self.node_config.groups) if self.node_config else []

    def _load_node_config(self) -> p.ConfigBody | None:
        raw = self.store.get("config")
        if raw is None:
            return None
        try:
            return structure(p.ConfigBody, raw)
        except errors.ValidationError:
            log.error("stored config is unreadable; waiting for the station to send it again")
            return None

    def _trusted_keys(self) -> list[p.VerifyKey]:
        trusted = self.node_config.trusted_keys if self.node_config else None
        return trust_from_config(self.cfg.station_keys, trusted)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> "Agent":
        self._recover_after_restart()
        for g in self.groups():
            self._subscribe_group(g)
        for t in self.topics.inbound_for_node(self.cfg.device_id, []):
            self.mqtt.subscribe(t, self._on_inbound)
        for name, target in (("worker", self._work), ("scheduler", self._schedule_loop),
                             ("prefetch", self._prefetch_loop), ("outbox", self._outbox_loop)):
            t = threading.Thread(target=self._guarded(target), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.mqtt.start()
        self._queue_scheduled_media()
        log.info("agent %s started (site %s, version %s)", self.cfg.device_id, self.cfg.site, agent_version())
        return self

    def healthy(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self.player._thread.is_alive()

    def _guarded(self, fn):
        def run():
            while not self._stop.is_set():
                try:
                    fn()
                    return
                except Exception:  # a thread of the agent must never die silently
                    if self._stop.is_set():  # close() shut the store or link under it: not a crash
                        log.debug("%s ended during shutdown", threading.current_thread().name, exc_info=True)
                        return
                    log.exception("%s crashed; restarting it", threading.current_thread().name)
                    time.sleep(1)
        return run

    def close(self, timeout: float = 2.0) -> None:
        """Stop audio, amplifier off, say offline, flush: within ~2 s (SIGTERM)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._schedule_changed.set()
        self._outbox_wake.set()
        self.player.close(timeout=min(1.0, timeout))
        self._flush_outbox(deadline=time.monotonic() + min(0.5, timeout / 4))
        try:
            offline = p.encode_report(p.StatusReport(state=p.NodeState.OFFLINE, at=p.now_ms(), version=agent_version(),
                                                     reason="stopped"))
            self.mqtt.farewell = OutgoingMessage(self.topics.device(self.cfg.device_id, p.Channel.STATUS), offline, 1,
                                                 True)
            self.mqtt.close(timeout=0.5)
        finally:
            for t in self._threads:
                t.join(0.2)
            self.amp.close()
            self.replay.close()
            self.store.close()
            logging.getLogger().removeHandler(self.log_ring)

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recover_after_restart(self) -> None:
        """An occurrence that was playing when the power went is reported, not replayed."""
        rows = self.store.db.execute("SELECT occurrence_id FROM occurrence_status WHERE status = 'fired'").fetchall()
        for (oid,) in rows:
            self.store.mark_occurrence(oid, "interrupted")
            self._event(p.EventType.INTERRUPTED, occurrence_id=oid, reason="agent restarted during playback")

    # --- MQTT: status, inbound ---------------------------------------------------------

    def _status(self) -> bytes:
        return p.encode_report(p.StatusReport(
            state=p.NodeState.ONLINE, at=p.now_ms(), version=agent_version(),
            schedule_versions=self.store.get("schedule_versions", {}) or None,
            config_version=self.node_config.version if self.node_config else None))

    def publish_status(self) -> None:
        if self.mqtt.connected:
            self.mqtt.publish(self.topics.device(self.cfg.device_id, p.Channel.STATUS), self._status(), retain=True)

    def _on_connect(self) -> None:
        self.publish_status()
        self._outbox_wake.set()
        self.publish_telemetry()

    def _on_inbound(self, msg) -> None:
        try:
            self._inbox.put_nowait(msg)
        except queue.Full:
            log.error("inbound queue full; dropped a message on %s", msg.topic)

    def _subscribe_group(self, group: str) -> None:
        for ch in (p.Channel.CMD, p.Channel.SCHEDULE):
            self.mqtt.subscribe(self.topics.group(group, ch), self._on_inbound)
        self._subscribed_groups.add(group)

    def _unsubscribe_group(self, group: str) -> None:
        for ch in (p.Channel.CMD, p.Channel.SCHEDULE):
            self.mqtt.unsubscribe(self.topics.group(group, ch))
        self._subscribed_groups.discard(group)
        self.store.drop_source(f"groups/{group}")

    def _ack(self, cmd_id: str, status: p.AckStatus, *, msg_type: str | None = None, reason: str | None = None,
             detail: str | None = None, result: dict | None = None) -> None:
        report = p.AckReport(cmd_id=cmd_id[:64], status=status, at=p.now_ms(), type=msg_type, reason=reason,
                             detail=detail[:500] if detail else None, result=result)
        topic = self.topics.device(self.cfg.device_id, p.Channel.ACK)
        try:
            self.mqtt.publish(topic, p.encode_report(report))
        except errors.MqttError as exc:
            log.warning("ack %s not sent: %s", cmd_id, exc)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.handle(msg.topic, msg.payload)
            except Exception:
                log.exception("failed to handle a message on %s", msg.topic)

    @staticmethod
    def _claimed_id(payload: bytes) -> str:
        try:
            obj = json.loads(payload)
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                return obj["id"][:64]
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        return "unknown"

    def handle(self, topic: str, payload: bytes) -> None:
        """Verify and execute one inbound message; every refusal is acked with its reason."""
        if not payload:
            return  # a retained message being cleared
        try:
            ref = self.topics.parse(topic)
            env = self.verifier.verify(payload)
            p.check_channel(env, ref)
        except errors.ProtocolError as exc:
            log.warning("rejected message on %s: %s", topic, exc)
            self._ack(self._claimed_id(payload), p.AckStatus.REJECTED, reason=exc.reason, detail=exc.detail)
            return
        handler = getattr(self, f"_cmd_{env.type.value}")
        try:
            handler(env, ref)
        except errors.ProtocolError as exc:
            self._ack(env.id, p.AckStatus.REJECTED, msg_type=env.type.value, reason=exc.reason, detail=exc.detail)
        except errors.ThanthienError as exc:
            log.error("%s %s failed: %s", env.type.value, env.id, exc)
            self._ack(env.id, p.AckStatus.FAILED, msg_type=env.type.value, reason="error", detail=str(exc))

    # --- documents --------------------------------------------------------------------

    def _cmd_config(self, env: p.Envelope, ref) -> None:
        body: p.ConfigBody = env.body
        held = self.node_config.version if self.node_config else 0
        if body.version < held:
            raise errors.StaleDocument(f"config version {body.version} is older than the held {held}")
        if body.version == held:
            self._ack(env.id, p.AckStatus.DONE, msg_type="config", result={"config_version": held})
            return
        old_groups = set(self.groups())
        first_or_changed_volume = self.node_config is None or self.node_config.volume != body.volume
        self.store.put("config", unstructure(body))
        if first_or_changed_volume:
            self.store.put("volume", body.volume)
        self.node_config = body
        for k in self._trusted_keys():
            self.verifier.trust(k)
        if body.trusted_keys:
            listed = {k.kid for k in body.trusted_keys}
            for kid in list(self.verifier.key_ids):
                if kid not in listed:
                    self.verifier.distrust(kid)
        if isinstance(self.amp, AmpRelay):
            self.amp.warmup_s, self.amp.tail_s = body.amp.warmup_ms / 1000, body.amp.tail_ms / 1000
        new_groups = set(body.groups)
        for g in old_groups - new_groups:
            self._unsubscribe_group(g)
        for g in new_groups - self._subscribed_groups:
            self._subscribe_group(g)
        log.info("config version %d applied (groups %s)", body.version, ", ".join(sorted(new_groups)) or "none")
        self._ack(env.id, p.AckStatus.DONE, msg_type="config", result={"config_version": body.version})
        self.publish_status()

    def _cmd_schedule(self, env: p.Envelope, ref) -> None:
        body: p.ScheduleBody = env.body
        source = body.target
        held = self.store.get("schedule_versions", {}).get(source, 0)
        if body.version < held:
            raise errors.StaleDocument(f"schedule {source} version {body.version} is older than the held {held}")
        if body.version > held:
            rows = [(it.occurrence_id, it.start_at, int(it.priority), json.dumps(unstructure(it)))
                    for it in body.items]
            self.store.replace_schedule(source, body.version, rows)
            self._schedule_changed.set()
            self._queue_scheduled_media()
            log.info("schedule %s version %d applied: %d items", source, body.version, len(body.items))
            self._event(p.EventType.SCHEDULE_APPLIED, detail={"target": source, "version": body.version,
                                                               "items": len(body.items)})
            self.publish_status()
        self._ack(env.id, p.AckStatus.DONE, msg_type="schedule", result={"target": source, "version": body.version})

    # --- commands ---------------------------------------------------------------------

    def _in_quiet_hours(self) -> bool:
        if not self.node_config or not self.node_config.quiet_hours:
            return False
        now = dt.datetime.now().strftime("%H:%M")
        for q in self.node_config.quiet_hours:
            if (q.start <= now < q.end) if q.start <= q.end else (now >= q.start or now < q.end):
                return True
        return False

    def _refuse_in_quiet_hours(self, env: p.Envelope) -> None:
        if env.priority < p.Priority.EMERGENCY and self._in_quiet_hours():
            raise errors.ProtocolError("the node is in its quiet hours; only an emergency may play now",
                                       reason="quiet_hours")

    def _done_acker(self, env: p.Envelope):
        def on_done(item: PlayItem, outcome: Outcome, reason: str | None) -> None:
            status = p.AckStatus.DONE if outcome is Outcome.FINISHED else p.AckStatus.FAILED
            self._ack(env.id, status, msg_type=env.type.value, reason=None if outcome is Outcome.FINISHED else outcome.value,
                      detail=reason)
        return on_done

    def _cmd_play(self, env: p.Envelope, ref) -> None:
        body: p.PlayBody = env.body
        self._refuse_in_quiet_hours(env)
        self._ack(env.id, p.AckStatus.ACCEPTED, msg_type="play")
        key = body.occurrence_id or env.id

        def job() -> None:
            try:
                pcm = self._pcm_for(body.media)
            except errors.ThanthienError as exc:
                self._event(p.EventType.PLAY_FAILED, broadcast_id=body.broadcast_id, occurrence_id=body.occurrence_id,
                            scheduled_at=body.start_at, priority=env.priority, reason=str(exc))
                self._ack(env.id, p.AckStatus.FAILED, msg_type="play", reason="bad_media", detail=str(exc))
                return
            item = PlayItem(key=key, kind=ItemKind.MEDIA, priority=env.priority, pcm=pcm, volume=body.volume,
                            repeat=body.repeat, broadcast_id=body.broadcast_id, occurrence_id=body.occurrence_id,
                            scheduled_at=body.start_at, title=body.title, interrupt_policy=body.interrupt_policy,
                            on_done=self._done_acker(env))
            if body.start_at is not None:
                if not self._wait_until(body.start_at):
                    return
            self.player.submit(item)

        threading.Thread(target=job, name=f"play-{key[:8]}", daemon=True).start()

    def _cmd_stop(self, env: p.Envelope, ref) -> None:
        n = self.player.stop(env.body.broadcast_id)
        self._ack(env.id, p.AckStatus.DONE, msg_type="stop", result={"stopped": n})

    def _cmd_volume(self, env: p.Envelope, ref) -> None:
        self.store.put("volume", env.body.volume)
        log.info("volume set to %d", env.body.volume)
        self._ack(env.id, p.AckStatus.DONE, msg_type="volume", result={"volume": env.body.volume})
        self.publish_telemetry()

    def _cmd_relay(self, env: p.Envelope, ref) -> None:
        body: p.RelayBody = env.body
        self._refuse_in_quiet_hours(env)
        self._ack(env.id, p.AckStatus.ACCEPTED, msg_type="relay")
        self.player.submit(PlayItem(key=body.occurrence_id or env.id, kind=ItemKind.RELAY, priority=env.priority,
                                    url=body.url, until_ms=body.until, volume=body.volume,
                                    broadcast_id=body.broadcast_id, occurrence_id=body.occurrence_id,
                                    on_done=self._done_acker(env)))

    def _cmd_test_tone(self, env: p.Envelope, ref) -> None:
        b: p.TestToneBody = env.body
        self._refuse_in_quiet_hours(env)
        self._ack(env.id, p.AckStatus.ACCEPTED, msg_type="test_tone")
        pcm = tone(b.frequency_hz, b.duration_ms, self.sink.sample_rate, self.sink.channels)
        self.player.submit(PlayItem(key=env.id, kind=ItemKind.TONE, priority=env.priority, pcm=pcm, volume=b.volume,
                                    title="test tone", on_done=self._done_acker(env)))

    def _cmd_identify(self, env: p.Envelope, ref) -> None:
        self._refuse_in_quiet_hours(env)
        self._ack(env.id, p.AckStatus.ACCEPTED, msg_type="identify")
        pcm = identify_pattern(env.body.duration_ms, self.sink.sample_rate, self.sink.channels)
        self.player.submit(PlayItem(key=env.id, kind=ItemKind.TONE, priority=env.priority, pcm=pcm, title="identify",
                                    on_done=self._done_acker(env)))

    def _cmd_ping(self, env: p.Envelope, ref) -> None:
        self._ack(env.id, p.AckStatus.DONE, msg_type="ping", result={"nonce": env.body.nonce, "at": p.now_ms()})

    def _cmd_restart(self, env: p.Envelope, ref) -> None:
        log.warning("restart requested: %s", env.body.reason or "no reason given")
        self._ack(env.id, p.AckStatus.ACCEPTED, msg_type="restart")
        self.exit_code = EXIT_RESTART
        self._stop.set()

    def _cmd_sync_schedule(self, env: p.Envelope, ref) -> None:
        self._queue_scheduled_media()
        self.publish_status()
        self._ack(env.id, p.AckStatus.DONE, msg_type="sync_schedule",
                  result={"schedule_versions": self.store.get("schedule_versions", {}),
                          "config_version": self.node_config.version if self.node_config else None})

    def _cmd_logs(self, env: p.Envelope, ref) -> None:
        lines = list(self.log_ring.lines)[-env.body.lines:]
        report = p.LogsReport(cmd_id=env.id, at=p.now_ms(), lines=[l[:1000] for l in lines])
        self.mqtt.publish(self.topics.device(self.cfg.device_id, p.Channel.LOGS), p.encode_report(report))
        self._ack(env.id, p.AckStatus.DONE, msg_type="logs", result={"lines": len(lines)})

    # --- media ------------------------------------------------------------------------

    def _pcm_for(self, ref: p.MediaRef) -> bytes:
        pcm = self._pcm_cache.get(ref.sha256)
        if pcm is None:
            path = self.media.ensure(ref)
            pcm = decode_file(path, self.sink.sample_rate, self.sink.channels)
            if len(self._pcm_cache) > 4:
                self._pcm_cache.pop(next(iter(self._pcm_cache)))
            self._pcm_cache[ref.sha256] = pcm
        return pcm

    def _queue_scheduled_media(self) -> None:
        for _oid, _start, item_json in self.store.pending_occurrences():
            media = json.loads(item_json).get("media")
            if media:
                self._downloads.put(structure(p.MediaRef, media))

    def _prefetch_loop(self) -> None:
        failed_at: dict[str, float] = {}
        while not self._stop.is_set():
            try:
                ref = self._downloads.get(timeout=0.5)
            except queue.Empty:
                continue
            if self.media.has(ref) or time.monotonic() - failed_at.get(ref.sha256, -1e9) < 30:
                continue
            try:
                self.media.ensure(ref)
                failed_at.pop(ref.sha256, None)
            except errors.ThanthienError as exc:
                failed_at[ref.sha256] = time.monotonic()
                log.error("media %s could not be fetched: %s", ref.sha256[:12], exc)
                self._event(p.EventType.ERROR, reason=f"media {ref.sha256[:12]}: {exc}")

    # --- the local schedule ----------------------------------------------------------

    def _wait_until(self, at_ms: int) -> bool:
        """Sleep until wall-clock ``at_ms`` (fine-grained at the end); False if stopping."""
        while not self._stop.is_set():
            remaining = at_ms - p.now_ms()
            if remaining <= 0:
                return True
            if remaining > 20:
                self._stop.wait(min((remaining - 15) / 1000, 0.5))
            else:
                time.sleep(max(0.0, remaining - 1) / 1000)
        return False

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            now = p.now_ms()
            due = self.store.pending_occurrences(until_ms=now + LOOKAHEAD_MS)
            for oid, start_at, item_json in due:
                if self._stop.is_set():
                    return
                if oid in self._handed_over:
                    continue  # queued or playing; marked `fired` once its first frame is out
                self._fire(structure(p.ScheduleItem, json.loads(item_json)))
            self._schedule_changed.clear()
            nxt = [o for o in self.store.pending_occurrences() if o[0] not in self._handed_over]
            wait_s = 1.0
            if nxt:
                wait_s = max(0.0, min(wait_s, (nxt[0][1] - LOOKAHEAD_MS - p.now_ms()) / 1000))
            self._schedule_changed.wait(wait_s)

    def _fire(self, it: p.ScheduleItem) -> None:
        now = p.now_ms()
        late = now - it.start_at
        ids = dict(broadcast_id=it.broadcast_id, occurrence_id=it.occurrence_id, scheduled_at=it.start_at,
                   priority=it.priority)
        if late > GRACE_MS:
            if it.late_policy is p.LatePolicy.PLAY_LATE and late <= it.max_late_ms:
                log.info("occurrence %s is %d ms late; playing it now as its policy says", it.occurrence_id, late)
            elif it.kind == "relay" and it.until is not None and now < it.until:
                log.info("relay window %s already open; joining it", it.occurrence_id)
            else:
                self.store.mark_occurrence(it.occurrence_id, "missed")
                self._event(p.EventType.MISSED, **ids, reason=f"{late // 1000} s late (node was off or busy)")
                return
        if it.kind == "relay":
            item = PlayItem(key=it.occurrence_id, kind=ItemKind.RELAY, priority=it.priority, url=it.url,
                            until_ms=it.until, volume=it.volume, broadcast_id=it.broadcast_id,
                            occurrence_id=it.occurrence_id, scheduled_at=it.start_at, title=it.title,
                            on_done=self._occurrence_done)
        else:
            try:
                pcm = self._pcm_for(it.media)
            except errors.ThanthienError as exc:
                self.store.mark_occurrence(it.occurrence_id, "failed")
                self._event(p.EventType.PLAY_FAILED, **ids, reason=str(exc))
                return
            item = PlayItem(key=it.occurrence_id, kind=ItemKind.MEDIA, priority=it.priority, pcm=pcm,
                            volume=it.volume, repeat=it.repeat, broadcast_id=it.broadcast_id,
                            occurrence_id=it.occurrence_id, scheduled_at=it.start_at, title=it.title,
                            interrupt_policy=it.interrupt_policy, on_done=self._occurrence_done)
        if not self._wait_until(it.start_at):
            return  # stopping: still pending, so a restart plays it or reports it missed
        # marked `fired` (durably) by the play_started event, right after the first frame
        self._handed_over.add(it.occurrence_id)
        self.player.submit(item)

    def _occurrence_done(self, item: PlayItem, outcome: Outcome, reason: str | None) -> None:
        status = {Outcome.FINISHED: "done", Outcome.FAILED: "failed"}.get(outcome, "interrupted")
        if item.occurrence_id:
            self.store.mark_occurrence(item.occurrence_id, status)

    # --- events and the outbox --------------------------------------------------------

    def _player_event(self, event_type: p.EventType, item: PlayItem, **fields: Any) -> None:
        now = p.now_ms()
        if event_type is p.EventType.PLAY_STARTED and item.occurrence_id and item.on_done == self._occurrence_done:
            self.store.mark_occurrence(item.occurrence_id, "fired")  # a restart must not play it again
        data: dict[str, Any] = dict(broadcast_id=item.broadcast_id, occurrence_id=item.occurrence_id,
                                    scheduled_at=item.scheduled_at, priority=item.priority,
                                    started_at=item.started_at)
        if event_type in (p.EventType.PLAY_FINISHED, p.EventType.INTERRUPTED, p.EventType.PLAY_FAILED):
            data["ended_at"] = now
            frame = self.sink.channels * 2
            data["duration_ms"] = item.played_bytes // frame * 1000 // self.sink.sample_rate
        detail = fields.pop("detail", None) or {}
        if item.first_frame_ns is not None and event_type is p.EventType.PLAY_FINISHED:
            detail["first_frame_at_ns"] = item.first_frame_ns
        if item.title:
            detail["title"] = item.title
        data.update(fields)
        self._event(event_type, detail=detail or None, **data)

    def _event(self, event_type: p.EventType, **fields: Any) -> None:
        """Write the event to the outbox (durable), then let the outbox thread publish it."""
        fields = {k: v for k, v in fields.items() if v is not None}
        report = p.EventReport(id=str(uuid.uuid4()), type=event_type, at=p.now_ms(), **fields)
        self.store.outbox_add(report.id, self.topics.device(self.cfg.device_id, p.Channel.EVENTS),
                              p.encode_report(report))
        self._outbox_wake.set()

    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            self._outbox_wake.wait(1.0)
            self._outbox_wake.clear()
            self._flush_outbox()

    def _flush_outbox(self, deadline: float | None = None) -> None:
        while self.mqtt.connected and (deadline is None or time.monotonic() < deadline):
            rows = self.store.outbox_peek(50)
            if not rows:
                return
            sent = [(row, self.mqtt.publish(row.topic, row.payload, qos=row.qos)) for row in rows]
            done = []
            for row, handle in sent:
                try:
                    handle.wait(10 if deadline is None else max(0.05, deadline - time.monotonic()))
                    done.append(row.seq)
                except errors.PublishRefused as exc:
                    log.error("the broker refuses our events (%s); keeping them and retrying in 30 s", exc)
                    self.store.outbox_remove(done)
                    self._stop.wait(30)
                    return
                except errors.PublishTimeout:
                    break
            self.store.outbox_remove(done)  # only what the broker acknowledged
            if len(done) < len(rows):
                return

    # --- telemetry ------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        cur = self.player.now_playing
        try:
            disk_free = shutil.disk_usage(self.data_dir).free
        except OSError:
            disk_free = None
        return {
            "at": p.now_ms(), "uptime_s": int(time.monotonic() - self.started), "version": agent_version(),
            "volume": self.volume(), "now_playing": None if cur is None else {
                "title": cur.title, "occurrence_id": cur.occurrence_id, "broadcast_id": cur.broadcast_id,
                "priority": int(cur.priority), "kind": cur.kind.value},
            "schedule_versions": self.store.get("schedule_versions", {}),
            "config_version": self.node_config.version if self.node_config else None,
            "cache_bytes": self.media.used_bytes(), "cache_limit_bytes": self.cfg.cache.max_bytes,
            "cpu_temp_c": cpu_temperature(), "clock_synced": kernel_synchronized(), "disk_free_bytes": disk_free,
            "outbox_pending": self.store.outbox_count(), "amp_on": bool(self.amp.is_on),
        }

    def publish_telemetry(self) -> None:
        if not self.mqtt.connected:
            return
        try:
            self.mqtt.publish(self.topics.device(self.cfg.device_id, p.Channel.TELEMETRY),
                              json.dumps(self.telemetry(), ensure_ascii=False), qos=0, retain=True)
        except errors.MqttError:
            pass

    def telemetry_interval_s(self) -> int:
        return self.node_config.telemetry_interval_s if self.node_config else self.cfg.telemetry_interval_s

    def run_forever(self, notify=None) -> int:
        """Main thread: telemetry, watchdog pings, until stop or restart is asked."""
        last_tel = 0.0
        last_prune = time.monotonic()
        if notify:
            notify("READY=1")
        while not self._stop.wait(0.5):
            if time.monotonic() - last_tel >= self.telemetry_interval_s():
                self.publish_telemetry()
                last_tel = time.monotonic()
            if time.monotonic() - last_prune > 3600:
                self.replay.prune(p.now_ms())
                self.store.prune_occurrences(p.now_ms() - 7 * 24 * 3600 * 1000)
                last_prune = time.monotonic()
            if notify and self.healthy():
                notify("WATCHDOG=1")
        if notify:
            notify("STOPPING=1")
        return self.exit_code

    def stop(self) -> None:
        self._stop.set()
