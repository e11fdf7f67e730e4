"""Console and API benchmarks (issue #7). Prints figures; asserts nothing.

1. Dashboard and report pages with 1,000 devices and 100,000 plays in the database:
   p50/p95 server time (the app's own Server-Timing header) and round trip, requests
   made from this process to a console served by a second process on loopback.
   Target: p95 server time ≤ 100 ms.
2. Kiosk upload: batches of ratings POSTed to /api/v1/kiosk/submissions by several
   threads for a fixed time; ratings/s sustained, and every one stored (no loss).
   Target ≥ 500 ratings/s.

    .venv/bin/python benchmarks/console.py [--devices 1000] [--plays 100000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broadcast import areas, auth, kiosk_feed  # noqa: E402
from broadcast.db import open_db, transaction  # noqa: E402
from devices.broker import free_port  # noqa: E402
from devices.config import toml_string  # noqa: E402

PASSWORD = "mat-khau-do-hieu-nang"


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def build(data: Path, devices: int, plays: int) -> None:
    """A ward-sized-times-twenty database: N devices in N/20 groups, occurrences each to
    every device over the last 30 days, proof-of-play events for each pair."""
    db = open_db(data / "station.db")
    areas.add_user(db, "quantri", "admin", "Quản trị")
    auth.set_password(db, "quantri", "quantri", PASSWORD)
    now = int(time.time() * 1000)
    rnd = random.Random(7)
    ngroups = max(1, devices // 20)
    occ_count = max(1, plays // devices)
    with transaction(db):
        db.conn.executemany("INSERT INTO groups (code, name, created_at) VALUES (?, ?, ?)",
                            [(f"to-{g}", f"Tổ dân phố {g}", now) for g in range(ngroups)])
        db.conn.executemany("INSERT INTO devices (id, name, created_at) VALUES (?, ?, ?)",
                            [(f"loa-{i:04d}", f"Cụm loa {i}", now) for i in range(devices)])
        db.conn.executemany("INSERT INTO device_groups VALUES (?, ?)",
                            [(f"loa-{i:04d}", f"to-{i % ngroups}") for i in range(devices)])
        db.conn.executemany("INSERT INTO device_state VALUES (?, ?, ?, ?, ?, ?)",
                            [(f"loa-{i:04d}", int(rnd.random() > 0.03), now - 86_400_000, now - rnd.randint(0, 60_000),
                              "0.1.0", json.dumps({"volume": 70, "disk_free_bytes": 2_000_000_000,
                                                   "now_playing": None, "at": now}))
                             for i in range(devices)])
        db.conn.executemany("INSERT INTO status_history VALUES (?, 1, ?)",
                            [(f"loa-{i:04d}", now - 40 * 86_400_000) for i in range(devices)])
        db.conn.executemany("INSERT INTO documents VALUES (?, 3, 'x', ?)",
                            [(f"groups/to-{g}", now) for g in range(ngroups)] +
                            [(f"devices/loa-{i:04d}", now) for i in range(devices)])
        db.conn.executemany("INSERT INTO device_documents VALUES (?, ?, ?, ?)",
                            [(f"loa-{i:04d}", f"groups/to-{i % ngroups}", 3 if rnd.random() > 0.05 else 2, now)
                             for i in range(devices)])
        db.execute("INSERT INTO media VALUES ('" + "a" * 64 + "', 'x.wav', 'wav', 1000, 60000, 22050, 1, 'tts', ?)",
                   [now])
        for b in range(20):
            db.execute("INSERT INTO bulletins (title, level, text, audio_sha256, author, state, created_at, updated_at) "
                       "VALUES (?, 'normal', 'Nội dung', ?, 'quantri', 'scheduled', ?, ?)",
                       [f"Bản tin {b}", "a" * 64, now, now])
        for o in range(occ_count):
            start = now - 29 * 86_400_000 + o * (29 * 86_400_000 // occ_count)
            sid = db.execute("INSERT INTO schedules (bulletin_id, kind, dtstart, targets, priority, created_by, "
                             "created_at) VALUES (?, 'play', ?, '{\"all\": true}', 1, 'quantri', ?)",
                             [o % 20 + 1, start, now]).lastrowid
            oid = f"s{sid}-{start}"
            db.execute("INSERT INTO occurrences (id, schedule_id, bulletin_id, start_at, priority) VALUES (?, ?, ?, ?, 1)",
                       [oid, sid, o % 20 + 1, start])
            db.conn.executemany("INSERT INTO occurrence_devices VALUES (?, ?)",
                                [(oid, f"loa-{i:04d}") for i in range(devices)])
            rows = []
            for i in range(devices):
                dev = f"loa-{i:04d}"
                r = rnd.random()
                if r < 0.02:
                    continue
                rows.append((str(uuid.UUID(int=rnd.getrandbits(128))), dev, "play_started", start, oid, None, start,
                             None, None, 70, None, start))
                if r < 0.05:
                    rows.append((str(uuid.UUID(int=rnd.getrandbits(128))), dev, "play_failed", start, oid, None, None,
                                 None, None, None, "decode", start))
                else:
                    rows.append((str(uuid.UUID(int=rnd.getrandbits(128))), dev, "play_finished", start + 60_000, oid,
                                 None, start, start + 60_000, 60_000, 70, None, start))
            db.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        for k in range(5000):
            areas.audit(db, "quantri", "bench.fill", "bench", k, {"n": k})
    db.execute("ANALYZE")
    db.conn.close()


SERVER = """
import sys
sys.path.insert(0, {root!r})
from devices.config import load_config
from broadcast.config import StationConfig
from broadcast.web import WebServer
import time
srv = WebServer(load_config({cfg!r}, StationConfig)).start()
print("READY", flush=True)
while True:
    time.sleep(3600)
"""


class Session:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(self, path: str) -> tuple[int, float, float, bytes]:
        t0 = time.perf_counter()
        with self.opener.open(self.base + path, timeout=120) as r:
            body = r.read()
            timing = r.headers.get("Server-Timing", "app;dur=nan")
            status = r.status
        return status, float(timing.split("dur=")[1]), (time.perf_counter() - t0) * 1000, body

    def login(self) -> None:
        _s, _t, _r, body = self.get("/login")
        csrf = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
        data = urllib.parse.urlencode({"username": "quantri", "password": PASSWORD, "csrf": csrf,
                                       "next": "/"}).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=60) as r:
            assert r.status == 200 and "Tổng quan".encode() in r.read()


def bench_pages(base: str, rounds: int) -> None:
    s = Session(base)
    s.login()
    month = time.strftime("%Y-%m")
    print(f"{'page':<28}{'cold ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'rtt p95':>9}{'bytes':>10}")
    for path in ("/", "/api/v1/dashboard", "/reports", f"/reports/month?month={month}", "/devices", "/audit",
                 "/schedules", "/bulletins", "/bulletins/1", "/devices/loa-0001"):
        status, cold, _rtt, body = s.get(path)
        assert status == 200, path
        server, rtts = [], []
        for _ in range(rounds):
            _st, t, rtt, body = s.get(path)
            server.append(t)
            rtts.append(rtt)
        print(f"{path[:27]:<28}{cold:>9.1f}{pct(server, 50):>9.1f}{pct(server, 95):>9.1f}{pct(rtts, 95):>9.1f}"
              f"{len(body):>10}")


def bench_kiosk(base: str, token: str, seconds: float, threads: int, batch: int, db_path: Path) -> None:
    sent = [0] * threads
    errors = []
    stop = time.monotonic() + seconds
    uuids: list[set] = [set() for _ in range(threads)]

    def worker(k: int):
        rnd = random.Random(k)
        now = int(time.time() * 1000)
        while time.monotonic() < stop:
            items = []
            for _ in range(batch):
                u = str(uuid.uuid4())
                items.append({"uuid": u, "kind": "rating", "created_ms": now, "counter_id": f"quay-{k}",
                              "level": rnd.randint(1, 5), "source": "button", "officer_id": f"can-bo-{rnd.randint(1, 9)}",
                              "field": "Hộ tịch", "factors": {f: rnd.randint(1, 5) for f in kiosk_feed.FACTORS}})
            body = json.dumps({"kiosk_id": "kiosk-01", "items": items}).encode()
            req = urllib.request.Request(base + "/api/v1/kiosk/submissions", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    ans = json.loads(r.read())
                if len(ans["accepted"]) != batch:
                    errors.append(f"accepted {len(ans['accepted'])} of {batch}")
                uuids[k].update(ans["accepted"])
                sent[k] += batch
            except OSError as exc:
                errors.append(str(exc))

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    db = open_db(db_path)
    stored = db.execute("SELECT COUNT(*) FROM kiosk_ratings").fetchone()[0]
    acked = set().union(*uuids)
    held = {r[0] for r in db.execute("SELECT uuid FROM kiosk_ratings")}
    missing = len(acked - held)
    total = sum(sent)
    print(f"kiosk upload: {total} ratings in {elapsed:.1f} s by {threads} threads, batches of {batch}: "
          f"{total / elapsed:,.0f} ratings/s; stored {stored}, lost {max(0, missing)}, errors {len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--plays", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        data = tmp / "data"
        t0 = time.monotonic()
        build(data, args.devices, args.plays)
        db = open_db(data / "station.db")
        plays = db.execute("SELECT COUNT(*) FROM occurrence_devices").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        token = kiosk_feed.add_token(db, "quantri", "kiosk", "kiosk-01")
        db.conn.close()
        print(f"database: {args.devices} devices, {plays} planned plays, {events} events "
              f"(built in {time.monotonic() - t0:.1f} s)")
        port = free_port()
        cfg = tmp / "station.toml"
        cfg.write_text(f"site = \"bench\"\nward_name = \"Phường đo hiệu năng\"\ndata_dir = {toml_string(data)}\n"
                       f"[web]\nhost = \"127.0.0.1\"\nport = {port}\n")
        server = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), cfg=str(cfg))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "READY"
            base = f"http://127.0.0.1:{port}"
            bench_pages(base, args.rounds)
            bench_kiosk(base, token, args.seconds, args.threads, args.batch, data / "station.db")
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
