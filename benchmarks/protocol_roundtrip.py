"""Publish → receive latency through our wrapper with signing + verification, versus a
bare paho publish → receive on the same private broker in the same run.

Prints median and p99 of both, their ratio, and the cost of sign + verify alone.
Targets (issue #3): ratio ≤ 1.5, sign + verify ≤ 0.3 ms per message.

    .venv/bin/python benchmarks/protocol_roundtrip.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices import protocol as p  # noqa: E402
from devices.broker import MosquittoProcess  # noqa: E402
from devices.mqtt import MqttClient, MqttSettings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def bare_paho(port: int, n: int, payload: bytes) -> list[float]:
    got = threading.Event()

    def on_message(client, userdata, msg):
        got.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sub", protocol=paho.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/bare", 1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-pub", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.3)
    out = []
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        pub.publish("bench/bare", payload, qos=1)
        if not got.wait(5):
            raise SystemExit("bare paho: message lost")
        out.append(time.perf_counter() - t0)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return out


def wrapper_plain(port: int, n: int, payload: bytes) -> list[float]:
    """The wrapper alone (no signing), to separate transport cost from crypto cost."""
    got = threading.Event()
    settings = MqttSettings(port=port)
    sub = MqttClient(settings, "bench-plain-sub")
    sub.subscribe("bench/plain", lambda msg: got.set())
    sub.connect()
    pub = MqttClient(settings, "bench-plain-pub").connect()
    time.sleep(0.3)
    out = []
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        pub.publish("bench/plain", payload)
        if not got.wait(5):
            raise SystemExit("wrapper: message lost")
        out.append(time.perf_counter() - t0)
    pub.close()
    sub.close()
    return out


def wrapper_signed(port: int, n: int, key: p.SigningKey) -> tuple[list[float], int]:
    settings = MqttSettings(port=port)
    topics = p.Topics("bench")
    topic = topics.device("loa-01", p.Channel.CMD)
    verifier = p.Verifier([key.public])
    got = threading.Event()
    errors = []

    def on_cmd(msg):
        try:
            env = verifier.verify(msg.payload)
            p.check_channel(env, topics.parse(msg.topic))
        except Exception as exc:  # recorded and reported, a benchmark must not hang
            errors.append(exc)
        got.set()

    sub = MqttClient(settings, "bench-wrap-sub")
    sub.subscribe(topic, on_cmd)
    sub.connect()
    pub = MqttClient(settings, "bench-wrap-pub").connect()
    time.sleep(0.3)
    body = {"volume": 50}
    out = []
    size = 0
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        payload = p.encode_envelope(key, "volume", body)
        pub.publish(topic, payload)
        if not got.wait(5):
            raise SystemExit("wrapper: message lost")
        out.append(time.perf_counter() - t0)
        size = len(payload)
    pub.close()
    sub.close()
    if errors:
        raise SystemExit(f"wrapper: {len(errors)} verification errors, first: {errors[0]}")
    return out, size


def sign_verify_cost(key: p.SigningKey, n: int) -> tuple[float, float]:
    verifier = p.Verifier([key.public])
    body = {"media": {"url": "http://station.local/media/" + "a" * 64, "sha256": "a" * 64, "bytes": 123456},
            "volume": 70, "broadcast_id": "b-123", "occurrence_id": "o-456"}
    t0 = time.perf_counter()
    payloads = [p.encode_envelope(key, "play", body) for _ in range(n)]
    t1 = time.perf_counter()
    for data in payloads:
        verifier.verify(data)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1000, (t2 - t1) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    args = ap.parse_args()
    key = p.SigningKey.generate()
    with tempfile.TemporaryDirectory() as tmp, MosquittoProcess(Path(tmp)) as broker:
        # warm up both paths, then measure alternately so machine noise hits both
        bare_paho(broker.port, 100, b"x" * 300)
        wrapper_signed(broker.port, 100, key)
        bare = bare_paho(broker.port, args.messages, b"x" * 274)
        plain = wrapper_plain(broker.port, args.messages, b"x" * 274)
        wrapped, size = wrapper_signed(broker.port, args.messages, key)
    sign_ms, verify_ms = sign_verify_cost(key, 2000)
    b50, b99 = pct(bare, 50) * 1000, pct(bare, 99) * 1000
    w50, w99 = pct(wrapped, 50) * 1000, pct(wrapped, 99) * 1000
    print(f"messages per path: {args.messages}, signed envelope {size} bytes, QoS 1, private Mosquitto")
    print(f"bare paho publish→receive      median {b50:7.3f} ms   p99 {b99:7.3f} ms")
    print(f"wrapper, unsigned              median {pct(plain, 50) * 1000:7.3f} ms   p99 {pct(plain, 99) * 1000:7.3f} ms")
    print(f"wrapper + sign + verify        median {w50:7.3f} ms   p99 {w99:7.3f} ms")
    print(f"ratio wrapper/bare             median {w50 / b50:5.2f}      p99 {w99 / b99:5.2f}   (target ≤ 1.5)")
    print(f"sign {sign_ms:.3f} ms + verify {verify_ms:.3f} ms = {sign_ms + verify_ms:.3f} ms per message "
          f"(target ≤ 0.3 ms)")
    print(f"mean bare {statistics.mean(bare) * 1000:.3f} ms, mean wrapper {statistics.mean(wrapped) * 1000:.3f} ms")


if __name__ == "__main__":
    main()
