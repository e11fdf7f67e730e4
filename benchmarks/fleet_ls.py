"""`thanthien fleet ls` against 1,000 simulated nodes: time until the listing is complete
and correct, measured from connecting. Target (issue #8): ≤ 1 s after connecting.

Each simulated node has a retained status, telemetry and signed config on a private
Mosquitto, exactly what real agents leave there.

    .venv/bin/python benchmarks/fleet_ls.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices import protocol as p  # noqa: E402
from devices.broker import MosquittoProcess  # noqa: E402
from devices.config import toml_string  # noqa: E402
from devices.fleet.client import FleetClient  # noqa: E402
from devices.mqtt import MqttClient, MqttSettings  # noqa: E402

SITE = "bench-ward"


def populate(port: int, n: int, key: p.SigningKey) -> None:
    t = p.Topics(SITE)
    now = p.now_ms()
    with MqttClient(MqttSettings(port=port), "bench-populate") as c:
        c.connect()
        handles = []
        for i in range(n):
            dev = f"loa-{i:04d}"
            handles.append(c.publish(t.device(dev, p.Channel.STATUS),
                                     json.dumps({"state": "online" if i % 10 else "offline", "at": now}), retain=True))
            handles.append(c.publish(t.device(dev, p.Channel.TELEMETRY),
                                     json.dumps({"at": now, "volume": i % 101, "version": "0.1.0",
                                                 "schedule_versions": {f"groups/to-{i % 12}": 3}}), retain=True))
            handles.append(c.publish(t.device(dev, p.Channel.CONFIG),
                                     p.encode_envelope(key, "config", {"version": 1, "device_id": dev,
                                                                       "groups": [f"to-{i % 12}"]}, ttl_ms=None),
                                     retain=True))
        for h in handles:
            h.wait(60)


def check(nodes, n: int) -> bool:
    if len(nodes) != n:
        return False
    return all(node.volume == int(node.device_id[4:]) % 101 and node.groups == [f"to-{int(node.device_id[4:]) % 12}"]
               and node.online == (int(node.device_id[4:]) % 10 != 0) for node in nodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    key = p.SigningKey.generate()
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp) / "b") as broker:
        populate(broker.port, args.nodes, key)
        complete_times, listing_times = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            with FleetClient(SITE, MqttSettings(port=broker.port)) as fc:
                fc.connect()
                t_conn = time.perf_counter()
                # time until every node is present and correct (what a technician waits for)
                while True:
                    with fc._lock:
                        complete = len(fc._nodes) == args.nodes and all(
                            n.groups and n.volume is not None and n.online is not None for n in fc._nodes.values())
                    if complete:
                        break
                    if time.perf_counter() - t_conn > 30:
                        raise SystemExit("listing never became complete")
                    time.sleep(0.001)
                t_complete = time.perf_counter()
                nodes = fc.snapshot(settle_s=0.3)
                assert check(nodes, args.nodes), "listing is wrong"
            complete_times.append(t_complete - t_conn)
            listing_times.append(time.perf_counter() - t0)
        # the whole CLI, as a technician runs it
        cfg = Path(tmp) / "fleet.toml"
        cfg.write_text(f"site = {toml_string(SITE)}\nsigning_key = \"/nonexistent\"\n[mqtt]\nport = {broker.port}\n")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "thanthien", "fleet", "--config", str(cfg), "ls", "--json"],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        cli_s = time.perf_counter() - t0
        assert out.returncode == 0 and len(json.loads(out.stdout)) == args.nodes, out.stderr
    complete_times.sort()
    print(f"nodes: {args.nodes} (retained status + telemetry + signed config each), runs: {args.runs}")
    print(f"connected → listing complete and correct: median {complete_times[len(complete_times) // 2] * 1000:.0f} ms, "
          f"worst {complete_times[-1] * 1000:.0f} ms  (target ≤ 1000 ms)")
    print(f"connect + complete + 0.3 s quiet period (what `ls` waits): median "
          f"{sorted(listing_times)[len(listing_times) // 2] * 1000:.0f} ms")
    print(f"`thanthien fleet ls --json` whole process: {cli_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
