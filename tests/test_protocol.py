"""The MQTT contract: topics, envelope, signatures, time window, replay, bodies."""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import errors
from devices import protocol as p

SITE = "phuong-hoai-thanh"
NOW = 1_800_000_000_000


@pytest.fixture(scope="module")
def key() -> p.SigningKey:
    return p.SigningKey.generate()


def verifier(key: p.SigningKey, **kw) -> p.Verifier:
    kw.setdefault("clock", lambda: NOW)
    return p.Verifier([key.public], **kw)


MEDIA = {"url": "http://station.local:8080/media/" + "a" * 64, "sha256": "a" * 64, "bytes": 1234}


def play(key: p.SigningKey, **kw) -> bytes:
    kw.setdefault("issued_at", NOW)
    return p.encode_envelope(key, p.MessageType.PLAY, {"media": MEDIA, "volume": 80}, **kw)


# --- identifiers and topics -------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "loa-01", "to-dan-pho-3", "x" * 64, "0abc9"])
def test_valid_ids(good):
    assert p.validate_id(good) == good


@pytest.mark.parametrize("bad", ["", "A", "loa/01", "loa+", "#", "loa 1", "-loa", "loa-", "x" * 65,
                                 "lóa", "loa\x00", None, 5, "loa_1", "+/#"])
def test_invalid_ids_refused(bad):
    with pytest.raises(errors.InvalidIdentifier) as exc:
        p.validate_id(bad, "device id")
    assert exc.value.reason == "bad_identifier"
    assert isinstance(exc.value, ValueError)


def test_topic_builders_and_parser_agree():
    t = p.Topics(SITE)
    assert t.device("loa-01", p.Channel.CMD) == f"thanthien/v1/{SITE}/devices/loa-01/cmd"
    assert t.group("to-1", p.Channel.SCHEDULE) == f"thanthien/v1/{SITE}/groups/to-1/schedule"
    assert t.all_cmd() == f"thanthien/v1/{SITE}/all/cmd"
    assert t.devices_filter(p.Channel.STATUS) == f"thanthien/v1/{SITE}/devices/+/status"
    for topic in (t.device("loa-01", p.Channel.EVENTS), t.group("to-1", p.Channel.CMD), t.all_cmd(),
                  t.station_status()):
        assert str(t.parse(topic)) == topic


def test_topic_builder_refuses_injection():
    t = p.Topics(SITE)
    for evil in ("+", "#", "a/b", "../x", "loa-01/cmd"):
        with pytest.raises(errors.InvalidIdentifier):
            t.device(evil, p.Channel.CMD)
    with pytest.raises(errors.InvalidTopic):
        t.group("to-1", p.Channel.STATUS)  # groups have no status channel
    with pytest.raises(errors.InvalidIdentifier):
        p.Topics("Phuong 1")


@pytest.mark.parametrize("topic", [
    "", "thanthien/v1", "other/v1/x/devices/a/cmd", f"thanthien/v1/{SITE}/devices/a",
    f"thanthien/v1/{SITE}/devices/a/b/cmd", f"thanthien/v1/{SITE}/devices/+/cmd",
    f"thanthien/v1/{SITE}/devices/a/bogus", f"thanthien/v1/{SITE}/groups/g/status",
    f"thanthien/v1/{SITE}/all/schedule", f"thanthien/v1/{SITE}/station/x/status", "x" * 600,
])
def test_bad_topics_refused(topic):
    with pytest.raises(errors.InvalidTopic):
        p.parse_topic(topic)


def test_topic_from_other_site_refused():
    with pytest.raises(errors.InvalidTopic):
        p.Topics(SITE).parse("thanthien/v1/other-ward/all/cmd")


ids = st.from_regex(p.ID_PATTERN, fullmatch=True)


@given(site=ids, target=ids, channel=st.sampled_from(list(p.Channel)))
def test_device_topic_round_trip(site, target, channel):
    topic = p.Topics(site).device(target, channel)
    ref = p.parse_topic(topic)
    assert (ref.site, ref.scope, ref.target, ref.channel) == (site, p.Scope.DEVICE, target, channel)


@given(st.text(max_size=300))
def test_parse_topic_never_crashes(text):
    try:
        p.parse_topic(text)
    except errors.InvalidTopic:
        pass


# --- envelope: accept ------------------------------------------------------------------


def test_signed_play_accepted_with_typed_body(key):
    env = verifier(key).verify(play(key, priority=p.Priority.PRIORITY))
    assert env.type is p.MessageType.PLAY and env.priority is p.Priority.PRIORITY
    assert isinstance(env.body, p.PlayBody)
    assert env.body.media.sha256 == "a" * 64 and env.body.volume == 80 and env.body.repeat == 1
    assert env.kid == key.kid


def test_canonical_json_is_stable_and_compact():
    a = p.canonical_json({"b": 1, "a": [1, "ệ"], "c": {"z": None, "y": True}})
    assert a == '{"a":[1,"ệ"],"b":1,"c":{"y":true,"z":null}}'.encode()
    with pytest.raises(ValueError):
        p.canonical_json({"x": float("nan")})


BODIES = {
    p.MessageType.PLAY: {"media": MEDIA, "start_at": NOW + 5000, "repeat": 2, "broadcast_id": "b1",
                         "occurrence_id": "o1"},
    p.MessageType.STOP: {},
    p.MessageType.VOLUME: {"volume": 55},
    p.MessageType.RELAY: {"url": "http://stream.example/vov1.mp3", "until": NOW + 3_600_000},
    p.MessageType.TEST_TONE: {"duration_ms": 2000},
    p.MessageType.IDENTIFY: {},
    p.MessageType.PING: {"nonce": "abc"},
    p.MessageType.RESTART: {"reason": "update"},
    p.MessageType.SYNC_SCHEDULE: {},
    p.MessageType.LOGS: {"lines": 50},
    p.MessageType.CONFIG: {"version": 3, "device_id": "loa-01", "groups": ["to-1", "to-2"],
                           "quiet_hours": [{"start": "22:00", "end": "05:30"}]},
    p.MessageType.SCHEDULE: {"version": 7, "target": "groups/to-1", "horizon_end": NOW + 48 * 3_600_000,
                             "items": [{"occurrence_id": "o1", "start_at": NOW + 60_000, "media": MEDIA,
                                        "priority": 2}]},
}


@pytest.mark.parametrize("msg_type", list(p.MessageType))
def test_every_message_type_round_trips(key, msg_type):
    payload = p.encode_envelope(key, msg_type, BODIES[msg_type], issued_at=NOW,
                                ttl_ms=None if msg_type is p.MessageType.CONFIG else 60_000)
    env = verifier(key).verify(payload)
    assert env.type is msg_type
    assert isinstance(env.body, p.BODY_TYPES[msg_type])
    # a dataclass body re-encodes to the same body
    again = p.encode_envelope(key, msg_type, env.body, issued_at=NOW, msg_id=env.id,
                              ttl_ms=None if msg_type is p.MessageType.CONFIG else 60_000)
    assert verifier(key).verify(again).body == env.body


# --- envelope: reject ------------------------------------------------------------------


def reject(key, payload, reason, **kw):
    with pytest.raises(errors.ProtocolError) as exc:
        verifier(key, **kw).verify(payload)
    assert exc.value.reason == reason, exc.value
    return exc.value


def mutate(payload: bytes, **changes) -> bytes:
    obj = json.loads(payload)
    obj.update(changes)
    return json.dumps(obj).encode()


def test_forged_signature_rejected(key):
    forger = p.SigningKey.generate()
    forged = mutate(play(forger), kid=key.kid)  # claims the station's key id
    reject(key, forged, "bad_signature")


def test_tampered_body_rejected(key):
    obj = json.loads(play(key))
    obj["body"]["volume"] = 100
    reject(key, json.dumps(obj).encode(), "bad_signature")


def test_unknown_key_rejected(key):
    reject(key, play(p.SigningKey.generate()), "unknown_key")


def test_missing_signature_rejected(key):
    obj = json.loads(play(key))
    del obj["sig"]
    reject(key, json.dumps(obj).encode(), "missing_signature")


def test_garbage_signature_rejected(key):
    reject(key, mutate(play(key), sig="***"), "bad_signature")
    reject(key, mutate(play(key), sig=base64.urlsafe_b64encode(os.urandom(64)).decode()), "bad_signature")


def test_expired_rejected(key):
    old = play(key, issued_at=NOW - 10 * 60_000, ttl_ms=60_000)
    e = reject(key, old, "expired")
    assert "ago" in e.detail


def test_expired_within_skew_accepted(key):
    verifier(key, max_skew_ms=30_000).verify(play(key, issued_at=NOW - 80_000, ttl_ms=60_000))


def test_future_dated_rejected(key):
    reject(key, play(key, issued_at=NOW + 5 * 60_000), "issued_in_future")


def test_replay_rejected(key):
    v = verifier(key)
    payload = play(key)
    v.verify(payload)
    with pytest.raises(errors.ReplayedMessage) as exc:
        v.verify(payload)
    assert exc.value.reason == "replayed"


def test_rejected_message_does_not_poison_replay_cache(key):
    v = verifier(key)
    payload = play(key)
    bad = mutate(payload, sig="AAAA")
    with pytest.raises(errors.BadSignature):
        v.verify(bad)
    v.verify(payload)  # the genuine one still goes through


def test_documents_are_not_replay_checked(key):
    """Retained schedules are redelivered on every reconnect; versions guard them."""
    v = verifier(key)
    doc = p.encode_envelope(key, "schedule", BODIES[p.MessageType.SCHEDULE], issued_at=NOW)
    assert v.verify(doc).body.version == 7
    assert v.verify(doc).body.version == 7


def test_oversized_rejected(key):
    reject(key, b"{" + b" " * (p.MAX_PAYLOAD_BYTES + 1) + b"}", "oversized")


@pytest.mark.parametrize("payload,reason", [
    (b"", "bad_json"), (b"not json", "bad_json"), (b"\xff\xfe", "bad_json"), (b"[1,2]", "bad_envelope"),
    (b"null", "bad_envelope"), (b'{"v":2}', "unsupported_version"), (b'{"v":1,"id":"x"}', "bad_envelope"),
    (b"[" * 100_000, "bad_json"),
])
def test_garbage_rejected(key, payload, reason):
    reject(key, payload, reason)


def test_unknown_type_and_fields_rejected(key):
    reject(key, mutate(play(key), type="self_destruct"), "unknown_type")
    reject(key, mutate(play(key), extra=1), "bad_envelope")


def test_bad_body_rejected_with_field_named(key):
    payload = p.encode_envelope(key, "volume", {"volume": 250}, issued_at=NOW)
    e = reject(key, payload, "bad_body")
    assert "volume" in e.detail and "between 0 and 100" in e.detail
    payload = p.encode_envelope(key, "play", {"media": {**MEDIA, "sha256": "XYZ"}}, issued_at=NOW)
    assert "media.sha256" in reject(key, payload, "bad_body").detail
    payload = p.encode_envelope(key, "relay", {"url": "file:///etc/passwd"}, issued_at=NOW)
    assert "url" in reject(key, payload, "bad_body").detail


def test_text_that_is_not_unicode_is_refused_not_crashed(key):
    """Found by hypothesis: a lone surrogate used to crash the encoder."""
    with pytest.raises(errors.InvalidBody):
        p.encode_envelope(key, "play", p.PlayBody(media=p.MediaRef(**MEDIA), title="\ud800"), issued_at=NOW)
    # the same text arriving as a JSON escape is refused with a reason
    payload = json.loads(p.encode_envelope(key, "play", {"media": MEDIA, "title": "x"}, issued_at=NOW))
    raw = json.dumps(payload).replace('"title": "x"', '"title": "\\ud800"').encode()
    assert "Unicode" in reject(key, raw, "bad_json").detail
    with pytest.raises(errors.InvalidBody):
        p.parse_body(p.MessageType.PLAY, {"media": MEDIA, "title": "\ud800"})


def test_only_config_may_omit_expiry(key):
    payload = p.encode_envelope(key, "play", {"media": MEDIA}, issued_at=NOW, ttl_ms=None)
    reject(key, payload, "bad_envelope")


def test_retired_key_refused_for_new_messages(key):
    retiring = p.VerifyKey(key.public.raw, not_after_ms=NOW - 1000)
    v = p.Verifier([retiring], clock=lambda: NOW)
    with pytest.raises(errors.UnknownKey):
        v.verify(play(key))


def test_check_channel(key):
    t = p.Topics(SITE)
    sched = verifier(key).verify(p.encode_envelope(key, "schedule", BODIES[p.MessageType.SCHEDULE], issued_at=NOW))
    p.check_channel(sched, t.parse(t.group("to-1", p.Channel.SCHEDULE)))
    with pytest.raises(errors.WrongRecipient):
        p.check_channel(sched, t.parse(t.group("to-2", p.Channel.SCHEDULE)))
    with pytest.raises(errors.WrongRecipient):
        p.check_channel(sched, t.parse(t.all_cmd()))
    cmd = verifier(key).verify(play(key))
    with pytest.raises(errors.WrongRecipient):
        p.check_channel(cmd, t.parse(t.device("loa-01", p.Channel.CONFIG)))


# --- replay store ----------------------------------------------------------------------


def test_sqlite_replay_store_survives_restart(tmp_path, key):
    path = tmp_path / "replay.db"
    payload = play(key)
    with p.SqliteReplayStore(path) as store:
        verifier(key, replay=store).verify(payload)
    with p.SqliteReplayStore(path) as store:
        with pytest.raises(errors.ReplayedMessage):
            verifier(key, replay=store).verify(payload)
        store.prune(NOW + 10 * 60_000)
        verifier(key, replay=store).verify(payload)  # forgotten only after it expired


def test_memory_replay_store_is_bounded():
    store = p.MemoryReplayStore(capacity=10)
    for i in range(50):
        assert store.check_and_add(str(i), NOW)
    assert len(store) == 10


# --- keys ------------------------------------------------------------------------------


def test_signing_key_file_is_private_and_reloads(tmp_path):
    path = tmp_path / "keys" / "station.key"
    k1 = p.SigningKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    k2 = p.SigningKey.load_or_create(path)
    assert k1.kid == k2.kid
    assert p.VerifyKey.from_text(k1.public.to_text()).kid == k1.kid


def test_broken_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "station.key"
    path.write_text("not a key")
    with pytest.raises(errors.StorageError):
        p.SigningKey.load(path)
    with pytest.raises(errors.ValidationError):
        p.VerifyKey.from_text("!!!")


# --- node reports ----------------------------------------------------------------------


def test_reports_round_trip():
    ev = p.EventReport(id=str(uuid.uuid4()), type=p.EventType.PLAY_FINISHED, at=NOW, occurrence_id="o1",
                       started_at=NOW - 30_000, ended_at=NOW, duration_ms=30_000, volume=70)
    back = p.parse_report(p.Channel.EVENTS, p.encode_report(ev))
    assert back == ev
    ack = p.AckReport(cmd_id=str(uuid.uuid4()), status=p.AckStatus.REJECTED, at=NOW, reason="expired")
    assert p.parse_report(p.Channel.ACK, p.encode_report(ack)) == ack


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b'{"state":"exploded","at":1}', b'{"state":"online"}',
                                     b'{"state":"online","at":-5}', b'{"state":"online","at":1,"x":1}'])
def test_bad_status_reports_rejected(payload):
    with pytest.raises(errors.ProtocolError):
        p.parse_report(p.Channel.STATUS, payload)


# --- properties: arbitrary input never crashes the parser -------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_protocol_errors(data):
    v = p.Verifier([p.SigningKey.generate().public], clock=lambda: NOW)
    try:
        v.verify(data)
    except errors.ProtocolError:
        pass
    for channel in (p.Channel.STATUS, p.Channel.ACK, p.Channel.EVENTS):
        try:
            p.parse_report(channel, data)
        except errors.ProtocolError:
            pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(p.MessageType)), json_values, st.dictionaries(st.sampled_from(
    ["v", "id", "type", "issued_at", "expires_at", "priority", "kid", "body", "sig", "zz"]), json_values))
def test_arbitrary_envelopes_only_raise_protocol_errors(key, msg_type, body, overrides):
    payload = json.loads(p.encode_envelope(key, msg_type, {}, issued_at=NOW, ttl_ms=1000))
    payload["body"] = body
    payload.update(overrides)
    try:
        data = json.dumps(payload).encode()
    except ValueError:
        return
    try:
        verifier(key).verify(data)
    except errors.ProtocolError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(volume=st.integers(0, 100), repeat=st.integers(1, 20), start=st.integers(0, 2**42),
       title=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=200))
def test_play_envelopes_round_trip(key, volume, repeat, start, title):
    body = p.PlayBody(media=p.MediaRef(**MEDIA), start_at=start, volume=volume, repeat=repeat, title=title)
    env = p.Verifier([key.public], clock=lambda: NOW).verify(
        p.encode_envelope(key, "play", body, issued_at=NOW))
    assert env.body == body
