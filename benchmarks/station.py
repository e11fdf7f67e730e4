"""Station benchmarks (issue #5). Prints figures; asserts nothing.

1. Schedule fan-out: a new signed schedule version on a group topic → every one of N
   simulated nodes has verified it and acked it; p50/p99/all, versus a bare paho
   fan-out of the same payload size (publish → N subscribers echo) on the same broker in
   the same run. Targets: ≤ 2 s at N = 1,000, ratio ≤ 2.
2. Event ingest: proof-of-play events over MQTT into SQLite through the station's ingest,
   events/s, and that none was lost. Target ≥ 2,000/s.
3. Report: 30 days × 60 nodes × 20 occurrences/day. Target ≤ 1 s.

    .venv/bin/python benchmarks/station.py [--nodes 200,1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices import protocol as p  # noqa: E402
from devices.broker import MosquittoProcess  # noqa: E402
from devices.mqtt import MqttSettings  # noqa: E402

SITE = "bench-ward"


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


class Fleet:
    """N lightweight nodes: paho clients that verify the schedule and ack its version."""

    def __init__(self, port: int, n: int, key: p.SigningKey | None, topic: str, reply_prefix: str, first: int = 0):
        self.clients = []
        self.ready = threading.Semaphore(0)
        verifier_keys = [key.public] if key else []
        for i in range(first, first + n):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{reply_prefix}-{i}", protocol=paho.MQTTv5)
            c.user_data_set({"id": f"loa-{i:04d}", "verifier": p.Verifier(verifier_keys) if key else None})

            def on_connect(client, ud, flags, rc, props):
                client.subscribe(topic, 1)

            def on_subscribe(client, ud, mid, rcs, props):
                self.ready.release()

            def on_message(client, ud, msg):
                if not msg.payload:
                    return
                if ud["verifier"] is not None:
                    env = ud["verifier"].verify(msg.payload)
                    body = p.encode_report(p.AckReport(cmd_id=env.id, status=p.AckStatus.DONE, at=p.now_ms(),
                                                       type="schedule", result={"version": env.body.version}))
                    client.publish(f"thanthien/v1/{SITE}/devices/{ud['id']}/ack", body, qos=1)
                else:
                    client.publish(f"{reply_prefix}/reply/{ud['id']}", b"x", qos=1)

            c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)
        for _ in range(n):
            self.ready.acquire(timeout=60)

    def close(self):
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


def _fleet_process(port, start, count, key_raw, topic, prefix, ready, stop):
    key = p.SigningKey(key_raw) if key_raw else None
    fleet = Fleet(port, count, key, topic, prefix, first=start)
    ready.put(count)
    stop.wait()
    fleet.close()


class FleetProcesses:
    """The simulated nodes spread over processes: paho's select() loop cannot use file
    descriptors above 1024, so one process must not hold more than a few hundred."""

    PER_PROCESS = 250

    def __init__(self, port, n, key_raw, topic, prefix):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.stop = ctx.Event()
        ready = ctx.Queue()
        self.procs = []
        for start in range(0, n, self.PER_PROCESS):
            count = min(self.PER_PROCESS, n - start)
            proc = ctx.Process(target=_fleet_process, args=(port, start, count, key_raw, topic, prefix, ready,
                                                             self.stop), daemon=True)
            proc.start()
            self.procs.append(proc)
        for _ in self.procs:
            ready.get(timeout=300)

    def close(self):
        self.stop.set()
        for proc in self.procs:
            proc.join(30)


def collector(port: int, topic: str, n: int):
    got: dict[str, float] = {}
    done = threading.Event()

    def on_message(client, ud, msg):
        got.setdefault(msg.topic, time.perf_counter())
        if len(got) >= n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(topic, 1)
    c.loop_start()
    time.sleep(0.5)
    return c, got, done


def fanout(port: int, n: int) -> tuple[list[float], list[float], int]:
    key = p.SigningKey.generate()
    topics = p.Topics(SITE)
    group = f"to-all-{n}"  # one topic per run: a run never sees another's retained document
    group_topic = topics.group(group, p.Channel.SCHEDULE)
    media = {"url": "http://station.local:8080/media/" + "a" * 64, "sha256": "a" * 64, "bytes": 400_000}
    now = p.now_ms()
    items = [{"occurrence_id": f"s1-{now + k * 3_600_000}", "start_at": now + k * 3_600_000, "media": media,
              "broadcast_id": "b1", "title": "Bản tin thời sự buổi sáng"} for k in range(1, 49)]
    payload = p.encode_envelope(key, "schedule", {"version": 2, "target": f"groups/{group}",
                                                  "horizon_end": now + 48 * 3_600_000, "items": items},
                                ttl_ms=48 * 3_600_000)
    # ours: signed schedule → every node verifies → ack
    fleet = FleetProcesses(port, n, key._raw, group_topic, "ours")
    col, got, done = collector(port, f"thanthien/v1/{SITE}/devices/+/ack", n)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-station", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.perf_counter()
    pub.publish(group_topic, payload, qos=1, retain=True)
    done.wait(120)
    ours = [t - t0 for t in got.values()]
    lost = n - len(got)
    fleet.close()
    col.loop_stop()
    col.disconnect()
    # bare paho: the same payload size, subscribers echo without verifying
    bare_topic = f"bench/bare/fanout-{n}"
    fleet = FleetProcesses(port, n, None, bare_topic, "bare")
    col, got, done = collector(port, f"bare/reply/+", n)
    t0 = time.perf_counter()
    pub.publish(bare_topic, b"x" * len(payload), qos=1)
    done.wait(120)
    bare = [t - t0 for t in got.values()]
    fleet.close()
    col.loop_stop()
    col.disconnect()
    pub.loop_stop()
    pub.disconnect()
    print(f"  schedule document: {len(payload)} bytes, 48 items, signed")
    return ours, bare, lost


def ingest(port: int, tmp: Path, events: int, rate: int) -> tuple[float, int]:
    from broadcast.config import StationConfig
    from broadcast.service import StationService
    from devices.config import load_config
    from devices.broker import free_port

    cfg_path = tmp / "station.toml"
    cfg_path.write_text(f'site = "{SITE}"\nward_name = "bench"\ndata_dir = "{tmp / "station"}"\n'
                        f"[mqtt]\nport = {port}\n[http]\nport = {free_port()}\n")
    svc = StationService(load_config(cfg_path, StationConfig)).start()
    svc.mqtt.wait_connected(10)
    time.sleep(0.5)
    topics = p.Topics(SITE)
    pubs = []
    for k in range(4):
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"node-pub-{k}", protocol=paho.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
        pubs.append(c)
    payloads = []
    for i in range(events):
        ev = p.EventReport(id=str(uuid.uuid4()), type=p.EventType.PLAY_FINISHED, at=p.now_ms(),
                           occurrence_id=f"s1-{i // 60}", broadcast_id="b1", started_at=p.now_ms() - 60_000,
                           ended_at=p.now_ms(), duration_ms=60_000, volume=70)
        payloads.append((topics.device(f"loa-{i % 60:02d}", p.Channel.EVENTS), p.encode_report(ev)))
    t0 = time.perf_counter()
    # a sustained offered load of `rate` events/s, in 10 ms slices, from 4 "nodes"
    for i, (topic, body) in enumerate(payloads):
        pubs[i % 4].publish(topic, body, qos=1)
        if i % max(1, rate // 100) == 0:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline:
        count = svc.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        if count >= events:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for c in pubs:
        c.loop_stop()
        c.disconnect()
    svc.close()
    return events / elapsed, events - count


def report(tmp: Path) -> tuple[float, int]:
    from broadcast import reports
    from broadcast.db import open_db, transaction

    db = open_db(tmp / "report.db")
    day = 86_400_000
    start = p.now_ms() - 30 * day
    rng = random.Random(1)
    with transaction(db):
        db.execute("INSERT INTO groups VALUES ('to-1', 'Tổ 1', NULL, NULL, NULL, NULL, 0)")
        for d in range(60):
            db.execute("INSERT INTO devices (id, name, created_at) VALUES (?, ?, 0)", [f"loa-{d:02d}", "x"])
            db.execute("INSERT INTO device_groups VALUES (?, 'to-1')", [f"loa-{d:02d}"])
            db.execute("INSERT INTO status_history VALUES (?, 1, ?)", [f"loa-{d:02d}", start])
        db.execute("INSERT INTO schedules (id, kind, dtstart, targets, priority, created_by, created_at) "
                   "VALUES (1, 'play', ?, '{\"all\": true}', 1, 'x', 0)", [start])
        occ, od, ev = [], [], []
        for k in range(30 * 20):
            oid = f"s1-{k}"
            at = start + k * (day // 20)
            occ.append((oid, 1, None, at, None, 1 if k % 50 else 3))
            for d in range(60):
                dev = f"loa-{d:02d}"
                od.append((oid, dev))
                r = rng.random()
                kind = "play_finished" if r < 0.95 else ("play_failed" if r < 0.98 else "missed")
                ev.append((str(uuid.uuid4()), dev, "play_started", at, oid, None, at, None, None, 70, None, at))
                ev.append((str(uuid.uuid4()), dev, kind, at + 60_000, oid, None, at, at + 60_000,
                           60_000 if kind == "play_finished" else 0, 70, None if kind == "play_finished" else "x",
                           at))
        db.conn.executemany("INSERT INTO occurrences (id, schedule_id, bulletin_id, start_at, end_at, priority) "
                            "VALUES (?, ?, ?, ?, ?, ?)", occ)
        db.conn.executemany("INSERT INTO occurrence_devices VALUES (?, ?)", od)
        db.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ev)
    t0 = time.perf_counter()
    summary = reports.device_summary(db, start, p.now_ms())
    elapsed = time.perf_counter() - t0
    return elapsed, sum(s.planned for s in summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="200,1000")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=2500, help="offered event load per second")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpd, MosquittoProcess(Path(tmpd) / "broker") as broker:
        tmp = Path(tmpd)
        print("1. schedule fan-out (new version → every node verified and acked)")
        for n in (int(x) for x in args.nodes.split(",")):
            ours, bare, lost = fanout(broker.port, n)
            print(f"  N={n}: ours p50 {pct(ours, 50) * 1000:.0f} ms, p99 {pct(ours, 99) * 1000:.0f} ms, all "
                  f"{max(ours) * 1000:.0f} ms, lost {lost} | bare paho p50 {pct(bare, 50) * 1000:.0f} ms, "
                  f"p99 {pct(bare, 99) * 1000:.0f} ms | ratio p99 {pct(ours, 99) / pct(bare, 99):.2f} "
                  f"(target ≤ 2 s at N=1000, ratio ≤ 2)")
        achieved, lost = ingest(broker.port, tmp, args.events, args.rate)
        print(f"2. event ingest: {args.events} events offered at {args.rate}/s over MQTT QoS 1: {achieved:.0f} "
              f"events/s into SQLite, lost {lost} (target ≥ 2000/s, none lost)")
        elapsed, pairs = report(tmp)
        print(f"3. report 30 days × 60 nodes × 20/day ({pairs} occurrence-node pairs): {elapsed * 1000:.0f} ms "
              f"(target ≤ 1000 ms)")


if __name__ == "__main__":
    main()
