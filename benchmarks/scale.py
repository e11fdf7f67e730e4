"""Scale simulation (issue #9): N real speaker agents, one broker, one real station.

For each N (--sizes, default 100,500 real agents; --light-sizes, default 1000 light
nodes, see below), on a private Mosquitto:

- the station runs as its own process (`thanthien station`), with N devices in groups of
  50 (tổ dân phố) and an approved bulletin;
- N real `Agent` instances (the production class: SQLite store, verifier, player to the
  null sink, one MQTT connection each) run in worker processes of 100 agents: paho's
  select() loop cannot use file descriptors above 1024, and one agent holds about nine
  (its MQTT socket and paho's wake-up pair, agent.db and replay.db with their -wal and
  -shm files) — 250 agents in one process made their MQTT connections fail and churn;
- a schedule for every node is written into the station's database; measured: the time
  from that commit to each node's ack of the new signed group schedule (fan-out p50/p99,
  and the part from the station's publish to the ack), then every node plays the bulletin
  by its own clock and the station ingests the play_started/play_finished events
  (throughput over the burst of N play_finished, events lost);
- CPU (share of one core over the measured phase) and RSS (now / peak) of the broker and
  the station, and the RSS per agent in the workers;
- the bare-paho baseline, same run, same broker, same N and process layout: a retained
  document of the same size published per group, each client answers with an ack of the
  same size (fan-out p50/p99), then each client publishes one event of the same size to a
  plain subscriber (throughput, lost).

--light-sizes runs the same measurement with light protocol nodes instead of real agents:
one paho client each that verifies every signed document, acks configs and schedules with
their versions and reports play_started/play_finished at each item's start_at (no SQLite,
player or media download). Real agents cost every simulated node a few ms of CPU per
document plus their idle loops, which saturates two cores near N = 500; light nodes put the
real load on the broker and the station at N = 1,000 and beyond.

Targets (printed, not asserted): N = 1,000 on one 2-core machine: fan-out p99 ≤ 2 s, no
lost events, station RSS ≤ 300 MB.

The simulated nodes keep their SQLite files and media cache under --nodes-dir. On one
machine all N of them share one disk, and every durable write of every node (synchronous=
FULL, fsync'd media) queues on it, which no real fleet does (each node has its own card).
So by default they live on tmpfs (/dev/shm) and the figures show the protocol, broker and
station; `--nodes-dir /var/tmp` puts them on the disk to see the shared-disk effect. The
station's database is always on disk.

    .venv/bin/python benchmarks/scale.py [--sizes 100,500] [--light-sizes 1000] [--per-process 100]
                                         [--nodes-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices import protocol as p  # noqa: E402
from devices.audio import tone  # noqa: E402
from devices.broker import MosquittoProcess, free_port  # noqa: E402
from devices.config import toml_string  # noqa: E402

SITE = "bench-scale"
MIN_LEAD_S = 20.0  # commit → start_at of the bulletin every node plays (--min-lead)
LIGHT_PER_PROCESS = 250  # a light node holds 3 file descriptors (socket + paho's wake-up pair)
GROUP_SIZE = 50
MEDIA_SECONDS = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
FDS_PER_AGENT = 9  # MQTT socket + paho's wake-up socket pair + agent.db and replay.db, each with -wal and -shm
MAX_PER_PROCESS = (1024 - 64) // FDS_PER_AGENT


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def device_ids(n: int) -> list[str]:
    return [f"loa-{i:04d}" for i in range(n)]


def group_of(device: str) -> str:
    return f"to-{int(device.rsplit('-', 1)[1]) // GROUP_SIZE + 1:02d}"


# --- process figures from /proc ----------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb = line.split()[:2]
            values[key] = int(kb) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


class CpuMeter:
    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(pid) for k, pid in pids.items()}

    def shares(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: 100 * (cpu_seconds(pid) - self.c0[k]) / dt for k, pid in self.pids.items()}


# --- an MQTT observer --------------------------------------------------------------------

class Observer:
    """One paho client that timestamps every message on some filters (wall clock)."""

    def __init__(self, port: int, filters: list[str]):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"observer-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        subscribed = threading.Event()

        def on_connect(client, ud, flags, rc, props):
            client.subscribe([(f, 1) for f in filters])

        def on_message(client, ud, msg):
            with self.lock:
                self.messages.append((time.time(), msg.topic, msg.payload, msg.retain))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.wait(10)

    def snapshot(self) -> list[tuple[float, str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- worker processes ----------------------------------------------------------------------

def write_node_config(path: Path, device: str, data_dir: Path, public_key: str, port: int) -> Path:
    path.write_text(
        f"site = {toml_string(SITE)}\ndevice_id = {toml_string(device)}\ndata_dir = {toml_string(data_dir)}\n"
        f"station_keys = [{toml_string(public_key)}]\ntelemetry_interval_s = 60\n"
        f"[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n"
        "[audio]\nsink = \"null\"\nsample_rate = 22050\nchannels = 1\n"
        "[amp]\nwarmup_ms = 0\ntail_ms = 0\n[logging]\nlevel = \"WARNING\"\n", "utf-8")
    return path


def agent_worker(port: int, devices: list[str], public_key: str, base: str, ready, stop) -> None:
    import logging

    from devices.agent.agent import Agent
    from devices.config import SpeakerConfig, load_config

    logging.basicConfig(level=logging.ERROR)
    agents = []
    for dev in devices:
        d = Path(base) / dev
        d.mkdir(parents=True, exist_ok=True)
        cfg = write_node_config(Path(base) / f"{dev}.toml", dev, d, public_key, port)
        agents.append(Agent(load_config(cfg, SpeakerConfig)).start())
    for a in agents:
        a.mqtt.wait_connected(120)
    ready.put(len(agents))
    stop.wait()
    for a in agents:
        a.stop()
    for a in agents:
        a.close()


def light_worker(port: int, devices: list[str], public_key: str, ready, stop) -> None:
    """Protocol-complete stand-ins for nodes, for N beyond what real agents can simulate here.

    Each is one paho client that does what the station sees of a node: verifies every
    signed document, acks configs and schedules with their versions, and at each item's
    start_at reports play_started then (after the media's length) play_finished. No
    SQLite, player or media download: the station and the broker get the real load.
    """
    topics = p.Topics(SITE)
    key = p.VerifyKey.from_text(public_key)
    clients = []
    subscribed = threading.Semaphore(0)
    timers: list[threading.Timer] = []

    for dev in devices:
        verifier = p.Verifier([key])
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=dev, protocol=paho.MQTTv5)
        group = group_of(dev)
        played: set[str] = set()

        def report(client, dev, channel, rep):
            client.publish(topics.device(dev, channel), p.encode_report(rep), qos=1)

        def play(client, dev, item):
            start = p.now_ms()
            ids = dict(occurrence_id=item.occurrence_id, broadcast_id=item.broadcast_id)
            report(client, dev, p.Channel.EVENTS, p.EventReport(id=str(uuid.uuid4()), type=p.EventType.PLAY_STARTED,
                                                                at=start, started_at=start, volume=70, **ids))
            dur = int(MEDIA_SECONDS * 1000)
            t = threading.Timer(MEDIA_SECONDS, lambda: report(client, dev, p.Channel.EVENTS, p.EventReport(
                id=str(uuid.uuid4()), type=p.EventType.PLAY_FINISHED, at=p.now_ms(), started_at=start,
                ended_at=p.now_ms(), duration_ms=dur, volume=70, **ids)))
            t.daemon = True
            t.start()

        def on_connect(client, ud, flags, rc, props, dev=dev, group=group):
            client.subscribe([(topics.device(dev, p.Channel.CONFIG), 1), (topics.group(group, p.Channel.SCHEDULE), 1)])
            report(client, dev, p.Channel.STATUS, p.StatusReport(state=p.NodeState.ONLINE, at=p.now_ms(),
                                                                 version="light"))

        def on_message(client, ud, msg, dev=dev, verifier=verifier, played=played):
            if not msg.payload:
                return
            try:
                env = verifier.verify(msg.payload)
            except Exception:  # noqa: BLE001 - a refused document is simply not acked
                return
            body = env.body
            if env.type.value == "config":
                result, kind = {"config_version": body.version}, "config"
            else:
                result, kind = {"target": body.target, "version": body.version}, "schedule"
                for item in body.items:
                    delay = (item.start_at - p.now_ms()) / 1000
                    if item.occurrence_id not in played and 0 <= delay < 3600:
                        played.add(item.occurrence_id)
                        tm = threading.Timer(delay, play, (client, dev, item))
                        tm.daemon = True
                        tm.start()
                        timers.append(tm)
            report(client, dev, p.Channel.ACK, p.AckReport(cmd_id=env.id, status=p.AckStatus.DONE, at=p.now_ms(),
                                                           type=kind, result=result))

        c.on_connect, c.on_message = on_connect, on_message
        start_client(c, port, subscribed, clients)
    serve_clients(clients, subscribed, ready, stop, timers)


def bare_worker(port: int, devices: list[str], ack_size: int, event_size: int, ready, stop) -> None:
    """Plain paho clients: answer a group document with an ack, and 'go' with one event."""
    clients = []
    subscribed = threading.Semaphore(0)
    for dev in devices:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{dev}", protocol=paho.MQTTv5)
        base = f"bare/{SITE}"
        group = group_of(dev)

        def on_connect(client, ud, flags, rc, props, group=group, base=base):
            client.subscribe([(f"{base}/groups/{group}/schedule", 1), (f"{base}/all/go", 1)])

        def on_message(client, ud, msg, dev=dev, base=base):
            if not msg.payload:
                return
            if msg.topic.endswith("/schedule"):
                client.publish(f"{base}/devices/{dev}/ack", b"a" * ack_size, qos=1)
            else:
                client.publish(f"{base}/devices/{dev}/events", b"e" * event_size, qos=1)

        c.on_connect, c.on_message = on_connect, on_message
        start_client(c, port, subscribed, clients)
    serve_clients(clients, subscribed, ready, stop)


def start_client(c: paho.Client, port: int, subscribed: threading.Semaphore, clients: list) -> None:
    """Connect one worker client; ``subscribed`` is released once its subscription is granted."""
    c.on_subscribe = lambda *a: subscribed.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    clients.append(c)


def serve_clients(clients: list, subscribed: threading.Semaphore, ready, stop, timers=()) -> None:
    """Report ready once every client has subscribed, run until ``stop``, then disconnect all."""
    for _ in clients:
        subscribed.acquire(timeout=120)
    ready.put(len(clients))
    stop.wait()
    for tm in timers:
        tm.cancel()
    for c in clients:
        c.loop_stop()
        c.disconnect()


class Workers:
    def __init__(self, target, n: int, per_process: int, args_for):
        ctx = mp.get_context("fork")
        self.stop = ctx.Event()
        ready = ctx.Queue()
        self.procs = []
        ids = device_ids(n)
        for start in range(0, n, per_process):
            chunk = ids[start:start + per_process]
            proc = ctx.Process(target=target, args=args_for(chunk) + (ready, self.stop), daemon=True)
            proc.start()
            self.procs.append(proc)
        self.count = sum(ready.get(timeout=600) for _ in self.procs)

    def rss_mb(self) -> float:
        return sum(rss_mb(proc.pid)[0] for proc in self.procs)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(120)
            if proc.is_alive():
                proc.kill()


# --- the station --------------------------------------------------------------------------

def station_supports(section: str) -> bool:
    import dataclasses

    from broadcast.config import StationConfig

    return section in {f.name for f in dataclasses.fields(StationConfig)}


def seed_station(tmp: Path, port: int, n: int) -> tuple[Path, int]:
    """Config and database: groups of 50, N devices, one approved 1-second bulletin."""
    from broadcast import areas, bulletins
    from broadcast.config import StationConfig
    from broadcast.db import open_db
    from broadcast.media import MediaLibrary
    from broadcast.tts import TextToSpeech
    from devices.config import load_config

    http = free_port()
    cfg_path = tmp / "station.toml"
    cfg_path.write_text(
        f"site = {toml_string(SITE)}\nward_name = \"bench\"\ndata_dir = {toml_string(tmp / 'station')}\n"
        f"[mqtt]\nport = {port}\n[http]\nhost = \"127.0.0.1\"\nport = {http}\npublic_url = \"http://127.0.0.1:{http}\"\n"
        "[logging]\nlevel = \"WARNING\"\n" + ("[web]\nenabled = false\n" if station_supports("web") else ""),
        "utf-8")
    cfg = load_config(cfg_path, StationConfig)
    p.SigningKey.load_or_create(cfg.signing_key_path)  # before the station starts: the nodes trust it
    db = open_db(cfg.data_dir / "station.db")
    areas.add_user(db, "admin", "admin", "Quản trị")
    areas.add_user(db, "vanthu", "operator", "Văn thư")
    admin = areas.Actor("admin", areas.Role.ADMIN)
    for g in sorted({group_of(d) for d in device_ids(n)}):
        areas.save_group(db, admin, g, f"Tổ dân phố {g}")
    for d in device_ids(n):
        areas.save_device(db, admin, d, d, [group_of(d)])
    wav = tmp / "ban-tin.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(tone(660, int(MEDIA_SECONDS * 1000), 22050, 1, amplitude=0.5))
    lib = MediaLibrary(db, cfg.data_dir / "media")
    media = lib.import_file(wav)
    tts = TextToSpeech.from_settings(cfg.data_dir / "tts-cache", cfg.tts)
    operator = areas.actor_for(db, "vanthu")
    bid = bulletins.create(db, operator, "Bản tin thử tải", "normal", media_sha256=media.sha256)
    bulletins.submit(db, lib, tts, operator, bid)
    bulletins.approve(db, admin, bid)
    db.conn.close()
    return cfg_path, bid


def add_schedule_now(cfg_path: Path, bid: int, start_at: int) -> tuple[float, int]:
    """Commit a schedule for every node, as the console would; returns (wall time, schedule id)."""
    from broadcast import areas, schedules
    from broadcast.config import StationConfig
    from broadcast.db import open_db
    from devices.config import load_config

    cfg = load_config(cfg_path, StationConfig)
    db = open_db(cfg.data_dir / "station.db")
    try:
        sid = schedules.add_schedule(db, areas.actor_for(db, "vanthu"), cfg.timezone,
                                     cfg.schedule_horizon_h * 3_600_000, bulletin_id=bid, rule=None,
                                     dtstart=start_at, targets=schedules.Targets(all=True))
        return time.time(), sid
    finally:
        db.conn.close()


FINAL = {"play_finished", "play_failed", "missed", "interrupted"}  # what became of a node's play


def events_for(db_path: Path, start_at: int) -> list[tuple[str, str, int, int]]:
    """(device, type, at on the node, received_at by the station) of the events of one occurrence."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT e.device_id, e.type, e.at, e.received_at FROM events e JOIN occurrences o "
                            "ON o.id = e.occurrence_id WHERE o.start_at = ?", [start_at]).fetchall()
        return [tuple(r) for r in rows]
    finally:
        conn.close()


def schedule_version(payload: bytes) -> tuple[str, int] | None:
    try:
        body = json.loads(payload)["body"]
        return body["target"], body["version"]
    except (ValueError, KeyError, TypeError):
        return None


# --- one size -------------------------------------------------------------------------------

def run_size(base: Path, nodes_base: Path, n: int, per_process: int, light: bool = False,
             min_lead: float = MIN_LEAD_S) -> dict:
    tmp = base / f"n{n}{'-light' if light else ''}"
    tmp.mkdir()
    out: dict = {"n": n, "nodes_dir": nodes_base, "light": light}
    broker = MosquittoProcess(tmp / "broker").start()
    try:
        cfg_path, bid = seed_station(tmp, broker.port, n)
        log = open(tmp / "station.log", "ab")
        station = subprocess.Popen([sys.executable, "-m", "thanthien", "station", "--config", str(cfg_path)],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            out.update(measure_station(tmp, nodes_base / tmp.name, broker, station, cfg_path, bid, n, per_process,
                                       light, min_lead))
        finally:
            station.send_signal(signal.SIGTERM)
            try:
                station.wait(30)
            except subprocess.TimeoutExpired:
                station.kill()
        out.update(measure_bare(broker, n, per_process, out["doc_bytes"], out["ack_bytes"], out["event_bytes"]))
    finally:
        broker.stop()
    return out


def measure_station(tmp: Path, nodes: Path, broker, station, cfg_path: Path, bid: int, n: int,
                    per_process: int, light: bool, min_lead: float) -> dict:
    from devices.protocol import SigningKey

    key = SigningKey.load(tmp / "station" / "station.key")  # created at seeding, adopted by the station
    topics = p.Topics(SITE)
    obs = Observer(broker.port, [topics.devices_filter(p.Channel.ACK), topics.devices_filter(p.Channel.EVENTS),
                                 f"thanthien/v1/{SITE}/groups/+/schedule"])
    t_start = time.monotonic()
    if light:
        agents = Workers(light_worker, n, LIGHT_PER_PROCESS, lambda chunk: (broker.port, chunk, key.public.to_text()))
    else:
        agents = Workers(agent_worker, n, per_process,
                         lambda chunk: (broker.port, chunk, key.public.to_text(), str(nodes)))
    # steady state: every node has applied its config (so it is in its group), then quiet
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if station.poll() is not None:
            agents.close()
            obs.close()
            log = (tmp / "station.log").read_text("utf-8", "replace")[-1500:]
            raise SystemExit(f"the station exited with status {station.returncode}:\n{log}")
        configured = {topic.split("/")[-2] for _, topic, pl, _ in obs.snapshot()
                      if topic.endswith("/ack") and json.loads(pl).get("type") == "config"}
        if len(configured) >= n:
            break
        time.sleep(0.5)
    startup_s = time.monotonic() - t_start
    while time.monotonic() < deadline:  # until no message for 2 s
        last = max((m[0] for m in obs.snapshot()), default=0)
        if time.time() - last > 2:
            break
        time.sleep(0.5)
    before = {}
    for _, topic, payload, _ in obs.snapshot():
        if topic.endswith("/schedule") and (sv := schedule_version(payload)):
            before[sv[0]] = max(before.get(sv[0], 0), sv[1])
    cpu = CpuMeter({"broker": broker.proc.pid, "station": station.pid})
    lead_s = max(min_lead, n / 20)  # nodes must have the document and the media before it plays
    start_at = p.now_ms() + int(lead_s * 1000)
    agents_cpu0 = agents.cpu_seconds()
    t0, _sid = add_schedule_now(cfg_path, bid, start_at)
    # fan-out: each node's ack of a newer version of its group's schedule
    acks: dict[str, float] = {}
    published: dict[str, float] = {}
    doc_bytes = ack_bytes = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(acks) < n:
        time.sleep(0.2)
        for t, topic, payload, retain in obs.snapshot():
            if t < t0:
                continue
            if topic.endswith("/schedule") and (sv := schedule_version(payload)) and sv[1] > before.get(sv[0], 0):
                published.setdefault(sv[0], t)
                doc_bytes = max(doc_bytes, len(payload))
            elif topic.endswith("/ack"):
                ack = json.loads(payload)
                res = ack.get("result") or {}
                target = res.get("target", "")
                if ack.get("type") == "schedule" and target.startswith("groups/") and \
                        res.get("version", 0) > before.get(target, 0):
                    acks.setdefault(topic.split("/")[-2], t)
                    ack_bytes = max(ack_bytes, len(payload))
    agents_cpu = agents.cpu_seconds() - agents_cpu0  # handling the new document, in every node
    group_pub = {d: published.get(f"groups/{group_of(d)}") for d in acks}
    fan = [t - t0 for t in acks.values()]
    pub_to_ack = [acks[d] - group_pub[d] for d in acks if group_pub[d] is not None]
    # plays and their events, ingested by the station
    db_path = tmp / "station" / "station.db"
    wait_until = start_at / 1000 + MEDIA_SECONDS + 60
    rows: list = []
    while time.time() < wait_until:
        time.sleep(0.5)
        if time.time() > start_at / 1000 + MEDIA_SECONDS:
            rows = events_for(db_path, start_at)
            if len({dev for dev, tp, _a, _r in rows if tp in FINAL}) >= n:
                break
    finished = sorted(r for _d, tp, _at, r in rows if tp == "play_finished")
    outcomes: dict[str, int] = {}
    for _d, tp, _at, _r in rows:
        if tp in FINAL:
            outcomes[tp] = outcomes.get(tp, 0) + 1
    reported = len({dev for dev, tp, _a, _r in rows if tp in FINAL})
    lag = [(r - at) / 1000 for _d, _tp, at, r in rows]  # node's event time → stored by the station
    shares = cpu.shares()
    st_rss, st_peak = rss_mb(station.pid)
    br_rss, br_peak = rss_mb(broker.proc.pid)
    event_sizes = [len(pl) for _, topic, pl, _ in obs.snapshot() if topic.endswith("/events")]
    event_bytes = int(pct(event_sizes, 50)) if event_sizes else 300
    workers_rss = agents.rss_mb()
    agents.close()
    obs.close()
    span = (finished[-1] - finished[0]) / 1000 if len(finished) > 1 else float("nan")
    return {
        "startup_s": startup_s, "fan_p50": pct(fan, 50), "fan_p99": pct(fan, 99), "fan_max": max(fan, default=math.nan),
        "fan_missing": n - len(acks), "pub_ack_p50": pct(pub_to_ack, 50), "pub_ack_p99": pct(pub_to_ack, 99),
        "commit_pub_max": max((t - t0 for t in published.values()), default=math.nan),
        "agent_cpu_ms": 1000 * agents_cpu / max(1, len(acks)),
        "plays": len(finished), "events": len(rows), "outcomes": outcomes, "unreported": n - reported,
        "ingest_rate": (len(finished) - 1) / span if span and span > 0 else float("nan"), "ingest_span_s": span,
        "lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99),
        "station_cpu": shares["station"], "broker_cpu": shares["broker"], "station_rss": st_rss,
        "station_peak": st_peak, "broker_rss": br_rss, "broker_peak": br_peak,
        "agent_rss_each": workers_rss / max(1, agents.count), "doc_bytes": doc_bytes or 600,
        "ack_bytes": ack_bytes or 200, "event_bytes": event_bytes,
    }


def measure_bare(broker, n: int, per_process: int, doc_bytes: int, ack_bytes: int, event_bytes: int) -> dict:
    base = f"bare/{SITE}"
    obs = Observer(broker.port, [f"{base}/devices/+/ack", f"{base}/devices/+/events"])
    bare = Workers(bare_worker, n, per_process, lambda chunk: (broker.port, chunk, ack_bytes, event_bytes))
    cpu = CpuMeter({"broker": broker.proc.pid})
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bare-station", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    time.sleep(0.5)
    t0 = time.time()
    for g in sorted({group_of(d) for d in device_ids(n)}):
        pub.publish(f"{base}/groups/{g}/schedule", b"s" * doc_bytes, qos=1, retain=True)
    deadline = time.monotonic() + 120
    acks: dict[str, float] = {}
    while time.monotonic() < deadline and len(acks) < n:
        time.sleep(0.2)
        for t, topic, _pl, _r in obs.snapshot():
            if topic.endswith("/ack"):
                acks.setdefault(topic.split("/")[-2], t)
    fan = [t - t0 for t in acks.values()]
    pub.publish(f"{base}/all/go", b"go", qos=1)
    deadline = time.monotonic() + 60
    events: list[float] = []
    while time.monotonic() < deadline:
        time.sleep(0.2)
        events = sorted(t for t, topic, _pl, _r in obs.snapshot() if topic.endswith("/events"))
        if len(events) >= n:
            break
    shares = cpu.shares()
    pub.loop_stop()
    pub.disconnect()
    bare.close()
    obs.close()
    span = events[-1] - events[0] if len(events) > 1 else float("nan")
    return {"bare_fan_p50": pct(fan, 50), "bare_fan_p99": pct(fan, 99), "bare_missing": n - len(acks),
            "bare_rate": (len(events) - 1) / span if span and span > 0 else float("nan"),
            "bare_lost": n - len(events), "bare_broker_cpu": shares["broker"]}


def report(r: dict) -> None:
    n = r["n"]
    who = ("light protocol nodes (verify, ack, report plays; no SQLite/player)" if r["light"]
           else f"real agents, node state in {r['nodes_dir']}")
    print(f"N={n}  {who}; {math.ceil(n / GROUP_SIZE)} groups of ≤{GROUP_SIZE}; all {n} connected and in step "
          f"after {r['startup_s']:.0f} s")
    print(f"  schedule fan-out, commit → ack: p50 {r['fan_p50'] * 1000:.0f} ms, p99 {r['fan_p99'] * 1000:.0f} ms, "
          f"max {r['fan_max'] * 1000:.0f} ms, missing {r['fan_missing']}   (target p99 ≤ 2000 ms at N=1000)")
    print(f"    commit → the station has published every group's new document: {r['commit_pub_max'] * 1000:.0f} ms; "
          f"CPU each node spent on it: {r['agent_cpu_ms']:.1f} ms, all {n} sharing this machine's cores")
    print(f"    station publish → node ack: p50 {r['pub_ack_p50'] * 1000:.0f} ms, "
          f"p99 {r['pub_ack_p99'] * 1000:.0f} ms | bare paho publish → ack: p50 {r['bare_fan_p50'] * 1000:.0f} ms, "
          f"p99 {r['bare_fan_p99'] * 1000:.0f} ms, missing {r['bare_missing']} "
          f"(document {r['doc_bytes']} B, ack {r['ack_bytes']} B)")
    other = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()) if k != "play_finished")
    print(f"  plays: {r['plays']}/{n} finished{' (' + other + ')' if other else ''}; {r['events']} events of that "
          f"occurrence stored by the station; nodes with no outcome stored (events lost): {r['unreported']}; "
          f"event on the node → stored: p50 {r['lag_p50'] * 1000:.0f} ms, p99 {r['lag_p99'] * 1000:.0f} ms")
    print(f"  event throughput, {n} nodes finishing the same play → station SQLite: {r['ingest_rate']:.0f} events/s "
          f"(all stored within {r['ingest_span_s']:.2f} s) | bare paho, {n} events published at once → one "
          f"subscriber: {r['bare_rate']:.0f} events/s, lost {r['bare_lost']}")
    print(f"  station: CPU {r['station_cpu']:.0f} % of a core, RSS {r['station_rss']:.0f} MB (peak "
          f"{r['station_peak']:.0f} MB; target ≤ 300 MB)")
    print(f"  broker: CPU {r['broker_cpu']:.0f} % (bare run {r['bare_broker_cpu']:.0f} %), RSS "
          f"{r['broker_rss']:.0f} MB (peak {r['broker_peak']:.0f} MB); nodes: {r['agent_rss_each']:.1f} MB RSS each "
          f"in their workers")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,500", help="N of real agents, comma-separated (default 100,500)")
    ap.add_argument("--per-process", type=int, default=100,
                    help=f"agents per worker process (default 100, at most {MAX_PER_PROCESS})")
    ap.add_argument("--light-sizes", default="1000",
                    help="N of light protocol nodes instead of real agents (default 1000; '' for none)")
    ap.add_argument("--min-lead", type=float, default=MIN_LEAD_S,
                    help=f"seconds at least between the commit and the play (default {MIN_LEAD_S:g})")
    ap.add_argument("--nodes-dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                    help="where the simulated nodes keep their state (default /dev/shm: see above)")
    args = ap.parse_args()
    if not 1 <= args.per_process <= MAX_PER_PROCESS:
        ap.error(f"--per-process: 1 to {MAX_PER_PROCESS} (about {FDS_PER_AGENT} file descriptors per agent, and "
                 "paho's select() loop cannot use any above 1024)")
    print(f"scale simulation on {os.cpu_count()} CPU(s); one private Mosquitto per size; load average now "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="thanthien-scale-") as tmpd, \
            tempfile.TemporaryDirectory(prefix="thanthien-scale-nodes-", dir=args.nodes_dir) as nodes:
        for n in (int(x) for x in args.sizes.split(",") if x):
            report(run_size(Path(tmpd), Path(nodes), n, args.per_process, min_lead=args.min_lead))
        for n in (int(x) for x in args.light_sizes.split(",") if x):
            report(run_size(Path(tmpd), Path(nodes), n, args.per_process, light=True, min_lead=args.min_lead))


if __name__ == "__main__":
    main()
