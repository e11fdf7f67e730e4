"""Kiosk benchmarks (issue #6). Prints figures; asserts nothing.

1. Search: p50/p95 over 2,000 generated procedures, queries without diacritics, with
   typos, and by field. Target p95 ≤ 5 ms.
2. Import: 2,000 procedures from a national-database JSON file. Target ≤ 5 s.
3. GPIO press → rating durable on disk (committed with synchronous=FULL), through
   gpiozero's MockFactory and the real ButtonPanel. Target p99 ≤ 20 ms.
4. Cold start of the UI process to the home screen under Xvfb (800×480), and the
   kiosk process's memory. Target ≤ 3 s.

    .venv/bin/python benchmarks/kiosk.py [--procedures 2000] [--presses 1000] [--no-ui]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiosk import catalogue  # noqa: E402
from kiosk.db import open_db  # noqa: E402
from kiosk.search import SearchIndex  # noqa: E402

WORDS = ("đăng ký khai sinh khai tử kết hôn chứng thực bản sao hợp đồng giao dịch xác nhận tình trạng hôn nhân "
         "trợ cấp xã hội hộ kinh doanh đất đai hòa giải tranh chấp giấy phép xây dựng nhà ở lễ hội tín ngưỡng "
         "khen thưởng gia đình văn hóa nuôi con nuôi giám hộ cư trú bảo hiểm y tế người khuyết tật mai táng").split()
FIELDS = ("Hộ tịch", "Chứng thực", "Bảo trợ xã hội", "Đất đai", "Văn hóa cơ sở", "Hòa giải ở cơ sở", "Tín ngưỡng, tôn giáo",
          "Thi đua – Khen thưởng", "Nuôi con nuôi", "Thành lập và hoạt động của hộ kinh doanh")


def generate(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        name = "Thủ tục " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
        out.append({
            "ma_tthc": f"9.{i:06d}", "ten_tthc": name, "linh_vuc": rng.choice(FIELDS), "cap_thuc_hien": "Cấp Xã",
            "co_quan_thuc_hien": "Ủy ban nhân dân cấp xã",
            "cach_thuc_thuc_hien": [{"hinh_thuc_nop": "Trực tiếp", "thoi_han_giai_quyet": f"{rng.randint(1, 30)} ngày làm việc",
                                     "phi_le_phi": "Không"}],
            "thanh_phan_ho_so": [{"ten_giay_to": " ".join(rng.choice(WORDS) for _ in range(6)), "so_ban_chinh": 1,
                                  "so_ban_sao": rng.randint(0, 2)} for _ in range(rng.randint(2, 6))],
            "trinh_tu_thuc_hien": "<ol>" + "".join(f"<li>Bước {k}: {' '.join(rng.choice(WORDS) for _ in range(12))}</li>"
                                                   for k in range(1, 5)) + "</ol>",
            "ket_qua_thuc_hien": "Giấy " + " ".join(rng.choice(WORDS) for _ in range(3)),
            "can_cu_phap_ly": [{"so_ky_hieu": f"Nghị định số {rng.randint(1, 200)}/2020/NĐ-CP"}],
            "link_dvc": f"https://dichvucong.gov.vn/p/{i}",
        })
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_catalogue(n: int, tmp: Path) -> None:
    rng = random.Random(6)
    path = tmp / "catalogue.json"
    path.write_text(json.dumps({"procedures": generate(n, rng)}, ensure_ascii=False), "utf-8")
    db = open_db(tmp / "bench.sqlite")
    t0 = time.perf_counter()
    result = catalogue.import_file(db, path)
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SearchIndex.from_db(db)
    t_index = time.perf_counter() - t0
    print(f"import: {result['added']} procedures ({path.stat().st_size / 1e6:.1f} MB) in {t_import:.2f} s "
          f"(target ≤ 5 s); index built in {t_index * 1000:.0f} ms")
    queries = []
    for _ in range(500):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
        q = " ".join(words)
        from kiosk.search import normalize

        q = normalize(q)
        if rng.random() < 0.3 and len(q) > 4:  # a typo
            k = rng.randrange(len(q) - 1)
            q = q[:k] + q[k + 1] + q[k] + q[k + 2:]
        queries.append(q)
    times = []
    hits = 0
    for q in queries:
        field = rng.choice(FIELDS) if rng.random() < 0.2 else None
        t0 = time.perf_counter()
        res = index.search(q, field=field)
        times.append((time.perf_counter() - t0) * 1000)
        hits += bool(res)
    print(f"search over {n}: p50 {pct(times, 50):.2f} ms, p95 {pct(times, 95):.2f} ms, max {max(times):.2f} ms "
          f"(target p95 ≤ 5 ms); {hits}/{len(queries)} queries found something")


def bench_gpio(presses: int, tmp: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    from devices.gpio import ButtonPanel
    from kiosk import ratings

    db = open_db(tmp / "gpio.sqlite")
    origin = ratings.Origin("kiosk-bench", "quay-1")
    lock = threading.Lock()
    latencies: list[float] = []
    pressed_at = [0.0]

    def on_press(level: int) -> None:
        with lock:
            ratings.record_rating(db, origin, level, "button")
        latencies.append((time.perf_counter() - pressed_at[0]) * 1000)

    factory = MockFactory()
    pins = [5, 6, 13, 19, 26]
    with ButtonPanel([(i + 1, p, None) for i, p in enumerate(pins)], on_press, bounce_ms=0, interval_s=0,
                     pin_factory=factory):
        for n in range(presses):
            pin = factory.pin(pins[n % 5])
            pressed_at[0] = time.perf_counter()
            pin.drive_low()
            pin.drive_high()
    stored = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
    print(f"GPIO press → rating durable (SQLite WAL, synchronous=FULL): p50 {pct(latencies, 50):.2f} ms, "
          f"p99 {pct(latencies, 99):.2f} ms, max {max(latencies):.2f} ms over {presses} presses "
          f"(target p99 ≤ 20 ms); {stored} stored")


STARTER = """
import os, sys, time, json, resource
sys.path.insert(0, {root!r})
from devices.config import load_config
from kiosk.config import KioskConfig
from kiosk.ui.app import run_app
t0 = float(os.environ["BENCH_T0"])
def driver(app):
    from kivy.clock import Clock
    def done(dt):
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        print(json.dumps({{"home_s": time.time() - t0, "screen": app.sm.current, "rss_mb": rss / 1e6,
                          "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3}}), flush=True)
        app.stop()
    Clock.schedule_once(done, 0)
run_app(load_config(sys.argv[1], KioskConfig), size=(800, 480), driver=driver)
"""


def bench_ui(tmp: Path, runs: int = 3) -> None:
    from devices.display import XvfbProcess
    from tests.kiosk_support import write_kiosk_config

    cfg = write_kiosk_config(tmp / "ui")
    with XvfbProcess(800, 480) as x:
        figures = []
        for i in range(runs + 1):
            env = {**x.env(), "BENCH_T0": repr(time.time())}
            out = subprocess.run([sys.executable, "-c", STARTER.format(root=str(ROOT)), str(cfg)], env=env,
                                 capture_output=True, text=True, timeout=120)
            line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
            if line is None:
                print("UI start failed:", out.stderr[-800:])
                return
            if i:  # the first run imports the catalogue and warms the disk cache
                figures.append(json.loads(line))
    starts = ", ".join(f"{f['home_s']:.2f}" for f in figures)
    print(f"cold start to the home screen under Xvfb (800×480): {starts} s (target ≤ 3 s); "
          f"kiosk process RSS {statistics.mean(f['rss_mb'] for f in figures):.0f} MB "
          f"(peak {max(f['maxrss_mb'] for f in figures):.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procedures", type=int, default=2000)
    ap.add_argument("--presses", type=int, default=1000)
    ap.add_argument("--no-ui", action="store_true", help="skip the Xvfb cold-start measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_catalogue(args.procedures, tmp)
        bench_gpio(args.presses, tmp)
        if not args.no_ui:
            bench_ui(tmp)


if __name__ == "__main__":
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    main()
