"""kill -9 during 1,000 rapid GPIO ratings while the station is down, then up:
every confirmed rating is on the kiosk's disk, and the station ends with each exactly once."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

from broadcast import kiosk_feed
from broadcast.web import WebServer
from devices.broker import free_port
from kiosk.db import database_path
from tests.kiosk_support import ROOT, write_kiosk_config
from tests.web_support import seed, station_config

TOTAL = 1000


def test_kill_9_during_rapid_ratings_loses_and_duplicates_nothing(tmp_path):
    (tmp_path / "st").mkdir()
    scfg = station_config(tmp_path / "st")
    sdb = seed(scfg)
    port = free_port()
    token = kiosk_feed.add_token(sdb, "quantri", "kiosk", "kiosk-01")
    cfg = write_kiosk_config(tmp_path / "kiosk", station_url=f"http://127.0.0.1:{port}", token=token, catalogue=None)
    kdb_path = database_path(tmp_path / "kiosk" / "data")
    rng = random.Random(20261125)
    confirmed: list[str] = []
    server = None
    kills = 0
    while len(confirmed) < TOTAL:
        if kills == 3:  # the station comes back after three crashes of the kiosk
            server = WebServer(scfg, host="127.0.0.1", port=port).start()
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kiosk_rater.py"), str(cfg),
                                 str(TOTAL - len(confirmed))], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        kill_after = rng.randint(60, 260)
        seen = 0
        for line in proc.stdout:
            if line.startswith("ok "):
                confirmed.append(line.split()[1])
                seen += 1
                if seen >= kill_after:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
        proc.stdout.close()
        proc.wait(timeout=60)
    assert kills >= 4 and len(set(confirmed)) == len(confirmed)

    kdb = sqlite3.connect(kdb_path)
    stored = {r[0] for r in kdb.execute("SELECT uuid FROM ratings")}
    assert set(confirmed) <= stored, f"{len(set(confirmed) - stored)} confirmed ratings lost"
    assert kdb.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kdb.close()

    if server is None:
        server = WebServer(scfg, host="127.0.0.1", port=port).start()
    try:
        from devices.config import load_config
        from kiosk.config import KioskConfig
        from kiosk.core import Kiosk
        from kiosk.sync import StationSync

        with Kiosk(load_config(cfg, KioskConfig)) as kiosk:
            sync = StationSync.from_config(kiosk)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                report = sync.run_once()
                if report.get("ok") and report["outbox"] == 0:
                    break
            assert report.get("ok") and report["outbox"] == 0, report
    finally:
        server.close()
    rows = sdb.execute("SELECT uuid, count(*) FROM kiosk_ratings WHERE kiosk_id='kiosk-01' GROUP BY uuid").fetchall()
    assert {u for u, _ in rows} == stored
    assert all(n == 1 for _, n in rows)
