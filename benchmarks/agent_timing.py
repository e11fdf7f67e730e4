"""Speaker-agent timing and footprint (issue #4). Prints figures; asserts nothing.

- scheduled-start lateness: start_at → first frame handed to the sink, p50/p99 over
  ≥ 200 scheduled plays (target p99 ≤ 20 ms);
- start skew across 50 agents given the same start_at on one machine (target p99 ≤ 5 ms);
- emergency pre-emption: command published → first emergency frame, media cached
  (target p99 ≤ 250 ms);
- steady-state RSS of one agent process (target ≤ 60 MB) and idle CPU (≤ 2 % of a core).

    .venv/bin/python benchmarks/agent_timing.py [--plays 200] [--agents 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import protocol as p  # noqa: E402
from devices.agent.agent import Agent  # noqa: E402
from devices.broker import MosquittoProcess  # noqa: E402
from devices.config import SpeakerConfig, load_config  # noqa: E402
from tests.agent_support import MediaServer, Station, write_agent_config  # noqa: E402
from devices.mqtt import MqttSettings  # noqa: E402


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def make_agents(tmp: Path, n: int, key, port: int, sink: str = "null") -> list[Agent]:
    agents = []
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dev = f"loa-{i:03d}"
        cfg = write_agent_config(tmp / f"{dev}.toml", device_id=dev, data_dir=tmp / dev, key=key, port=port,
                                 sink=sink, extra="")
        agents.append(Agent(load_config(cfg, SpeakerConfig)).start())
    for a in agents:
        a.mqtt.wait_connected(30)
    time.sleep(0.5)
    return agents


def first_frames(station: Station, occurrence_ids: set[str], timeout: float) -> dict[tuple[str, str], int]:
    """(device, occurrence) → first frame time (ns) from play_finished events."""
    out = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < len(occurrence_ids) * max(1, station._expect_devices):
        try:
            dev, ev = station.events.get(timeout=0.5)
        except Exception:
            continue
        if ev.type is p.EventType.PLAY_FINISHED and ev.occurrence_id in occurrence_ids:
            out[(dev, ev.occurrence_id)] = ev.detail["first_frame_at_ns"]
    return out


def lateness(tmp: Path, port: int, media: MediaServer, plays: int) -> list[float]:
    station = Station(MqttSettings(port=port))
    station._expect_devices = 1
    agent = make_agents(tmp / "late", 1, station.key, port)[0]
    m = media.add_wav("blip.wav", 0.05, 1000)
    start0 = p.now_ms() + 5000
    items = [{"occurrence_id": f"l{i}", "start_at": start0 + i * 120, "media": m.ref()} for i in range(plays)]
    station.publish_schedule("devices/loa-000", 1, items)
    frames = first_frames(station, {it["occurrence_id"] for it in items}, timeout=plays * 0.12 + 30)
    by_id = {it["occurrence_id"]: it["start_at"] for it in items}
    agent.close()
    station.close()
    return [(ns / 1e6 - by_id[oid]) for (_d, oid), ns in frames.items()]


def skew(tmp: Path, port: int, media: MediaServer, n_agents: int, rounds: int) -> tuple[list[float], int]:
    station = Station(MqttSettings(port=port))
    station._expect_devices = n_agents
    agents = make_agents(tmp / "skew", n_agents, station.key, port)
    for a in agents:
        station.publish_config(a.cfg.device_id, 1, ["all-speakers"])
    time.sleep(2)
    m = media.add_wav("skew.wav", 0.05, 800)
    start0 = p.now_ms() + 8000
    items = [{"occurrence_id": f"s{i}", "start_at": start0 + i * 400, "media": m.ref()} for i in range(rounds)]
    station.publish_schedule("groups/all-speakers", 1, items)
    frames = first_frames(station, {it["occurrence_id"] for it in items}, timeout=rounds * 0.4 + 60)
    spreads = []
    for it in items:
        times = [ns for (d, oid), ns in frames.items() if oid == it["occurrence_id"]]
        if len(times) == n_agents:
            spreads.append((max(times) - min(times)) / 1e6)
    for a in agents:
        a.close()
    station.close()
    return spreads, len(frames)


def preemption(tmp: Path, port: int, media: MediaServer, trials: int) -> list[float]:
    station = Station(MqttSettings(port=port))
    station._expect_devices = 1
    agent = make_agents(tmp / "pre", 1, station.key, port)[0]
    normal = media.add_wav("normal.wav", 3.0, 440)
    urgent = media.add_wav("urgent.wav", 0.2, 1500)
    warm = station.send("loa-000", "play", {"media": urgent.ref()}, priority=p.Priority.EMERGENCY)
    station.wait_ack(warm)  # media cached and decoded
    station.send("loa-000", "play", {"media": normal.ref()})
    out = []
    for i in range(trials):
        station.send("loa-000", "play", {"media": normal.ref(), "occurrence_id": f"n{i}", "repeat": 5})
        station.wait_event(lambda d, e, i=i: e.type is p.EventType.PLAY_STARTED and e.occurrence_id == f"n{i}")
        time.sleep(0.3)
        t_send = time.time_ns()
        station.send("loa-000", "play", {"media": urgent.ref(), "occurrence_id": f"e{i}"},
                     priority=p.Priority.EMERGENCY, topic=station.topics.all_cmd())
        _d, ev = station.wait_event(lambda d, e, i=i: e.type is p.EventType.PLAY_FINISHED and e.occurrence_id == f"e{i}")
        out.append((ev.detail["first_frame_at_ns"] - t_send) / 1e6)
        station.send("loa-000", "stop", {})
        time.sleep(0.2)
    agent.close()
    station.close()
    return out


def footprint(tmp: Path, port: int, key) -> tuple[float, float]:
    cfg = write_agent_config(tmp / "rss.toml", device_id="loa-rss", data_dir=tmp / "rss", key=key, port=port,
                             sink="null")
    proc = subprocess.Popen([sys.executable, "-m", "thanthien", "speaker", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)  # settle
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        c0, t0 = cpu(), time.monotonic()
        time.sleep(20)
        c1, t1 = cpu(), time.monotonic()
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS"))
        return rss_kb / 1024, (c1 - c0) / (t1 - t0) * 100
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plays", type=int, default=200)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        media = MediaServer(tmp / "www")
        with MosquittoProcess(tmp / "broker") as broker:
            late = lateness(tmp, broker.port, media, args.plays)
            print(f"scheduled-start lateness over {len(late)} plays: p50 {pct(late, 50):.2f} ms, "
                  f"p99 {pct(late, 99):.2f} ms, max {max(late):.2f} ms  (target p99 ≤ 20 ms)")
            spreads, n = skew(tmp, broker.port, media, args.agents, args.rounds)
            if spreads:
                print(f"start skew across {args.agents} agents in one process, {len(spreads)} rounds: "
                      f"p50 {pct(spreads, 50):.2f} ms, p99 {pct(spreads, 99):.2f} ms  (target p99 ≤ 5 ms)")
            else:
                print(f"start skew: no complete round ({n} plays reported)")
            pre = preemption(tmp, broker.port, media, args.trials)
            print(f"emergency pre-emption, command → first emergency frame over {len(pre)} trials: "
                  f"p50 {pct(pre, 50):.1f} ms, p99 {pct(pre, 99):.1f} ms  (target p99 ≤ 250 ms; "
                  f"includes the 150 ms fade of the interrupted item)")
            rss, cpu = footprint(tmp, broker.port, __import__("devices.protocol").protocol.SigningKey.generate())
            print(f"one agent process, idle: RSS {rss:.1f} MB (target ≤ 60 MB), CPU {cpu:.2f} % of one core "
                  f"(target ≤ 2 %)")
        media.close()
    print(f"mean lateness {statistics.mean(late):.2f} ms")


if __name__ == "__main__":
    main()
