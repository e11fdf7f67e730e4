"""Ratings, feedback, the outbox, satisfaction figures and the GPIO answer buttons."""

from __future__ import annotations

import time

import pytest

from devices.gpio import ButtonPanel
from kiosk import ratings
from kiosk.db import open_db
from kiosk.pin import hash_pin, verify_pin
from kiosk.ratings import InputError, Origin

ORIGIN = Origin("kiosk-01", "quay-1")


@pytest.fixture
def db(tmp_path):
    return open_db(tmp_path / "kiosk.sqlite")


def test_rating_is_stored_with_every_field(db):
    uid = ratings.record_rating(db, ORIGIN, 5, "button")
    row = db.execute("SELECT uuid, kiosk_id, counter_id, level, source, synced_at FROM ratings").fetchone()
    assert row == (uid, "kiosk-01", "quay-1", 5, "button", None)
    uid2 = ratings.record_rating(db, ORIGIN, 2, "screen", officer_id="can-bo-01", procedure_code="1.001193",
                                 field_name="Hộ tịch", factors={"access": 4, "officers": 2}, reasons=["cho_lau"],
                                 comment="Chờ <b>lâu</b>")
    items = ratings.pending_items(db)
    assert [i["uuid"] for i in items] == [uid, uid2]
    assert items[1]["factors"] == {"access": 4, "officers": 2} and items[1]["reasons"] == ["cho_lau"]
    assert items[1]["comment"] == "Chờ <b>lâu</b>"  # stored as text; screens never interpret it


@pytest.mark.parametrize("kwargs, field", [
    ({"level": 0}, "level"), ({"level": 6}, "level"), ({"level": "5"}, "level"), ({"level": True}, "level"),
    ({"officer_id": "../x"}, "officer_id"), ({"procedure_code": "a b"}, "procedure_code"),
    ({"factors": {"speed": 3}}, "factors.speed"), ({"factors": {"access": 9}}, "factors.access"),
    ({"factors": [1]}, "factors"), ({"reasons": ["hack"]}, "reasons"), ({"reasons": ["cho_lau"] * 11}, "reasons"),
    ({"comment": "x" * 2001}, "comment"), ({"comment": "a\x00b"}, "comment"), ({"comment": "\ud800"}, "comment"),
])
def test_bad_rating_input_is_refused_naming_the_field_in_vietnamese(db, kwargs, field):
    args = {"level": 4, **kwargs}
    level = args.pop("level")
    with pytest.raises(InputError) as err:
        ratings.record_rating(db, ORIGIN, level, "screen", **args)
    assert err.value.field == field and err.value.message_vi
    assert db.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0


def test_follow_up_holds_the_rating_until_finished(db):
    uid = ratings.record_rating(db, ORIGIN, 3, "screen", follow_up=True)
    assert ratings.pending_items(db) == []
    assert [i["uuid"] for i in ratings.pending_items(db, now=time.time_ns() // 10**6 + ratings.FOLLOW_UP_HOLD_MS + 1)] == [uid]
    ratings.finish_rating(db, uid, officer_id="can-bo-02", factors={"results": 3}, reasons=["tre_hen"])
    (item,) = ratings.pending_items(db)
    assert item["officer_id"] == "can-bo-02" and item["factors"] == {"results": 3}
    ratings.mark_synced(db, [uid])
    with pytest.raises(InputError):
        ratings.finish_rating(db, uid, comment="too late")


def test_feedback_validation(db):
    uid = ratings.record_feedback(db, ORIGIN, "phan_anh", "  Đèn hành lang hỏng  ", phone="0905 123 456")
    (item,) = ratings.pending_items(db)
    assert item["uuid"] == uid and item["text"] == "Đèn hành lang hỏng" and item["kind"] == "feedback"
    for args, field in [(("khac", "x"), "category"), (("gop_y", ""), "text"), (("gop_y", "x" * 4001), "text"),
                        (("gop_y", None), "text")]:
        with pytest.raises(InputError) as err:
            ratings.record_feedback(db, ORIGIN, *args)
        assert err.value.field == field
    with pytest.raises(InputError, match="phone"):
        ratings.record_feedback(db, ORIGIN, "gop_y", "ok", phone="gọi tôi")


def test_outbox_marks_only_named_uuids(db):
    a = ratings.record_rating(db, ORIGIN, 5, "button")
    b = ratings.record_feedback(db, ORIGIN, "gop_y", "tốt")
    assert ratings.outbox_size(db) == 2
    assert ratings.mark_synced(db, [a, "not-ours"]) == 1
    assert [i["uuid"] for i in ratings.pending_items(db)] == [b]
    assert ratings.mark_synced(db, [a]) == 0  # twice is harmless


def test_satisfaction_shares(db):
    for level, officer, field, factors in [(5, "can-bo-01", "Hộ tịch", {"access": 5, "officers": 5}),
                                           (4, "can-bo-01", "Hộ tịch", {"access": 4}),
                                           (2, "can-bo-02", "Chứng thực", {"access": 2, "officers": 1}),
                                           (5, None, None, {})]:
        ratings.record_rating(db, ORIGIN, level, "screen", officer_id=officer, field_name=field, factors=factors)
    (overall,) = ratings.satisfaction(db, "overall")
    assert (overall.answers, overall.satisfied, overall.pct) == (4, 3, 75.0)
    assert not overall.meets_target
    assert ratings.satisfaction(db, "overall", target_pct=75)[0].meets_target
    factor = {s.key: s for s in ratings.satisfaction(db, "factor")}
    assert (factor["access"].answers, factor["access"].pct) == (3, 66.7)
    assert factor["officers"].pct == 50.0 and factor["results"].answers == 0
    officers = {s.key: s for s in ratings.satisfaction(db, "officer", labels={"can-bo-01": "Nguyễn Thị Hoa"})}
    assert officers["can-bo-01"].label == "Nguyễn Thị Hoa" and officers["can-bo-01"].pct == 100.0
    assert {s.key for s in ratings.satisfaction(db, "field")} == {"", "Hộ tịch", "Chứng thực"}
    month = time.strftime("%Y-%m")
    assert ratings.satisfaction(db, "month")[0].key == month
    assert ratings.satisfaction(db, "overall", month="2001-01")[0].answers == 0
    with pytest.raises(InputError):
        ratings.satisfaction(db, "overall", month="01/2001")
    csv_text = ratings.export_csv(db)
    assert csv_text.startswith("\ufeffuuid,") and csv_text.count("\n") == 5


def test_pin_hash_roundtrip():
    stored = hash_pin("2468")
    assert verify_pin("2468", stored) and not verify_pin("2469", stored)
    assert not verify_pin("2468", None) and not verify_pin("2468", "scrypt$garbage")
    assert not verify_pin("1" * 1000, stored)
    with pytest.raises(ValueError):
        hash_pin("12")


def test_buttons_give_one_rating_per_interval(mock_pins):
    got = []
    clock = [100.0]
    pins = {1: 5, 2: 6, 3: 13, 4: 19, 5: 26}
    leds = {1: 12, 2: 16, 3: 20, 4: 21, 5: 25}
    with ButtonPanel([(v, pins[v], leds[v]) for v in pins], got.append, bounce_ms=0, interval_s=3,
                     pin_factory=mock_pins, clock=lambda: clock[0]) as panel:
        assert all(mock_pins.pin(p).state for p in leds.values())  # lit: inviting an answer
        btn = mock_pins.pin(26)
        for _ in range(10):  # a child hammering the button
            btn.drive_low()
            btn.drive_high()
        assert got == [5] and panel.ignored == 9
        assert not mock_pins.pin(12).state  # the other LEDs go dark
        clock[0] += 3.5
        mock_pins.pin(5).drive_low()
        mock_pins.pin(5).drive_high()
        assert got == [5, 1]


def test_button_handler_errors_do_not_kill_the_panel(mock_pins):
    calls = []

    def handler(v):
        calls.append(v)
        raise RuntimeError("disk full")

    with ButtonPanel([(5, 26, None)], handler, bounce_ms=0, interval_s=0, pin_factory=mock_pins) as panel:
        for _ in range(2):
            mock_pins.pin(26).drive_low()
            mock_pins.pin(26).drive_high()
        assert calls == [5, 5] and panel.accepted == 2
