"""Drive the real kiosk UI with real touches (run under Xvfb by tests/test_kiosk_ui.py).

    python tests/kiosk_ui_driver.py CONFIG WIDTHxHEIGHT OUTDIR

Starts the app with gpiozero's MockFactory, then walks a citizen's and an admin's paths
by dispatching touches at the centre of widgets (found by their ``tid``), checks what
each screen shows, saves a screenshot of every screen, and writes OUTDIR/results.json.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    config_path, size, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    w, h = (int(x) for x in size.split("x"))
    from gpiozero.pins.mock import MockFactory

    from devices.config import load_config
    from kiosk.config import KioskConfig
    from kiosk.ui.app import run_app

    cfg = load_config(config_path, KioskConfig)
    factory = MockFactory()
    results: dict = {"checks": {}, "overflow": {}, "screens": [], "error": None}
    out.mkdir(parents=True, exist_ok=True)

    def driver(app):
        from kivy.clock import Clock

        steps = scenario(app, cfg, factory, results, out)

        def advance(_dt=None):
            try:
                delay = next(steps)
            except StopIteration:
                finish()
                return
            except Exception:  # noqa: BLE001 - report, then stop the app
                results["error"] = traceback.format_exc()
                finish()
                return
            Clock.schedule_once(advance, delay)

        def finish():
            (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))
            app.stop()

        advance()

    started = time.monotonic()
    results["start"] = started
    run_app(cfg, size=(w, h), screenshot_dir=None, pin_factory=factory, driver=driver)
    return 0 if results["error"] is None else 1


def find(root, tid):
    for w in root.walk(restrict=False):
        if getattr(w, "tid", None) == tid:
            return w
    raise LookupError(f"no widget with tid {tid!r} on screen")


def tap(app, tid):
    from kivy.tests.common import UnitTestTouch
    from kivy.uix.scrollview import ScrollView

    w = find(app.root, tid)
    for parent in _parents(w):
        if isinstance(parent, ScrollView):
            parent.scroll_to(w, padding=10, animate=False)
            parent.update_from_scroll()
            break
    x, y = w.to_window(*w.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()


def type_keys(app, text):
    target = app.keyboard.target
    for ch in text:
        before = target.text if target is not None else None
        tap(app, "key.space" if ch == " " else f"key.{ch.upper()}")
        if target is not None and target.text == before:
            key = find(app.root, "key.space" if ch == " " else f"key.{ch.upper()}")
            x, y = key.to_window(*key.center)
            hits = [f"{type(w).__name__}:{getattr(w, 'tid', '')}:{tuple(map(int, w.to_window(*w.pos)))}"
                    f"+{tuple(map(int, w.size))}" for w in app.root.walk()
                    if w.collide_point(*w.to_widget(x, y)) and getattr(w, "tid", None)]
            raise AssertionError(f"key {ch!r} did not type into {getattr(target, 'tid', target)} ({target.text!r}); "
                                 f"tap at {x:.0f},{y:.0f} {key.state} kb={app.keyboard.pos},{app.keyboard.size} "
                                 f"hits={hits}")


def overflowing(app) -> list[str]:
    """Labels and buttons whose text does not fit their box on the current screen."""
    from kivy.uix.label import Label
    from kivy.uix.scrollview import ScrollView

    bad = []
    screen = app.sm.current_screen
    for root in (screen, app.keyboard, app.toast_panel):
        for wdg in root.walk(restrict=True):
            if not isinstance(wdg, Label) or not wdg.text or wdg.opacity == 0 or wdg.width < 2:
                continue
            if any(isinstance(p, ScrollView) for p in _parents(wdg)) and wdg.size_hint_y is None:
                # auto-height paragraphs in a scroll view only have to fit the width
                if wdg.texture_size[0] > wdg.width + 2:
                    bad.append(f"{wdg.text[:40]!r} too wide")
                continue
            tw, th = wdg.texture_size
            if tw > wdg.width + 2 or th > wdg.height + 2:
                bad.append(f"{wdg.text[:40]!r} {tw:.0f}x{th:.0f} in {wdg.width:.0f}x{wdg.height:.0f}")
    return bad


def _parents(w):
    p = w.parent
    for _ in range(100):  # the Window is its own parent
        if p is None or p is w:
            return
        yield p
        w, p = p, p.parent


def shot(app, out, name, results):
    from kivy.core.window import Window

    path = out / f"kiosk-{name}-{Window.width}x{Window.height}.png"
    app.root.export_to_png(str(path))
    results["screens"].append(path.name)
    results["overflow"][name] = overflowing(app)


def check(results, name, ok, detail=""):
    results["checks"][name] = {"ok": bool(ok), "detail": str(detail)[:300]}


def scenario(app, cfg, factory, results, out):
    import sqlite3

    from kiosk.db import database_path

    db = sqlite3.connect(database_path(cfg.data_dir))
    results["ready_s"] = time.monotonic() - results["start"]
    yield 0.6
    check(results, "home", app.sm.current == "home")
    shot(app, out, "home", results)
    home = app.screen("home")
    home.next_page()
    yield 0.3
    shot(app, out, "home-hours", results)
    home.next_page()
    yield 0.3
    panel_text = " ".join(w.text for w in home.panel.walk() if hasattr(w, "text"))
    check(results, "announcements", "Lịch tiêm phòng" in panel_text, panel_text[:200])
    shot(app, out, "home-announcements", results)
    home.reset()

    # search without diacritics, with a typo, by the on-screen keyboard
    tap(app, "home.search")
    yield 0.8
    type_keys(app, "dang ky ket hno")
    yield 0.6
    first = app.screen("search").results.children[-1]
    check(results, "search_first", getattr(first, "tid", "") == "search.result.1.000894", getattr(first, "tid", None))
    shot(app, out, "search", results)
    tap(app, "search.field.Chứng thực")
    yield 0.4
    tap(app, "key.clear")
    yield 0.4
    fields = {c.tid[len("search.result."):] for c in app.screen("search").results.children}
    check(results, "browse_field", fields and all(code.startswith("2.") for code in fields), sorted(fields))
    shot(app, out, "search-field", results)
    tap(app, "search.all")
    tap(app, "search.input")
    yield 0.6
    type_keys(app, "khai sinh")
    yield 0.8
    tap(app, "search.result.1.001193")
    yield 0.6
    scr = app.screen("procedure")
    name = find(app.root, "procedure.name").text if app.sm.current == "procedure" else None
    check(results, "procedure_open", name == "Thủ tục đăng ký khai sinh", (app.sm.current, name))
    check(results, "procedure_qr", (scr.qr.source or "").endswith(".png") and Path(scr.qr.source).exists(),
          scr.qr.source)
    shot(app, out, "procedure", results)
    tap(app, "procedure.read")
    wav = Path(cfg.audio.sink[4:])
    for _ in range(150):  # synthesis (espeak-ng here), then real-time playback into the wav sink
        yield 0.2
        if wav.exists() and wav.stat().st_size > 200_000:
            break
    speaking = app.reader.speaking and find(app.root, "procedure.read").text == "Dừng đọc"
    tap(app, "procedure.read")  # stop
    yield 0.5
    check(results, "read_aloud", speaking and wav.exists() and wav.stat().st_size > 200_000
          and app.reader.last_error is None and not app.reader.speaking
          and find(app.root, "procedure.read").text == "Đọc to",
          f"{speaking} {wav.stat().st_size if wav.exists() else 0} {app.reader.last_error} {app.reader.last_engine}")
    tap(app, "procedure.larger")
    tap(app, "procedure.larger")
    yield 0.4
    check(results, "font_larger", app.fs > 1.2, app.fs)
    shot(app, out, "procedure-large", results)
    tap(app, "procedure.contrast")
    yield 0.4
    check(results, "contrast", app.contrast)
    shot(app, out, "procedure-contrast", results)
    tap(app, "procedure.contrast")
    tap(app, "procedure.smaller")
    tap(app, "procedure.smaller")
    yield 0.3

    # rating on screen, with the optional follow-up
    tap(app, "procedure.rate")
    yield 0.4
    shot(app, out, "rate", results)
    tap(app, "rate.level.2")
    yield 0.4
    row = db.execute("SELECT uuid, level, source, open_until, procedure_code FROM ratings ORDER BY rowid DESC").fetchone()
    check(results, "screen_rating_durable", row and row[1] == 2 and row[2] == "screen" and row[3] > 0
          and row[4] == "1.001193" and app.sm.current == "thanks", row)
    shot(app, out, "thanks", results)
    tap(app, "thanks.more")
    yield 0.4
    tap(app, "followup.officer.can-bo-01")
    yield 0.2
    tap(app, "followup.field.Chứng thực")
    yield 0.2
    tap(app, "followup.factor.officers.2")
    yield 0.2
    tap(app, "followup.reason.cho_lau")
    yield 0.3
    shot(app, out, "followup", results)
    tap(app, "followup.comment")
    yield 0.3
    tap(app, "key.telex")
    type_keys(app, "chowf lauu")
    tap(app, "key.telex")
    yield 0.3
    comment = find(app.root, "followup.comment").text
    tap(app, "followup.send")
    yield 0.4
    row = db.execute("SELECT officer_id, factors, reasons, comment, open_until, field FROM ratings WHERE uuid=?",
                     [row[0]]).fetchone()
    check(results, "followup_saved", row == ("can-bo-01", '{"officers": 2}', '["cho_lau"]', comment, 0, "Chứng thực")
          and comment.startswith("chờ"), (row, comment))
    check(results, "back_home_after_followup", app.sm.current == "home")

    # a physical button press anywhere
    before = db.execute("SELECT count(*) FROM ratings WHERE source='button'").fetchone()[0]
    pin = factory.pin(cfg.buttons.buttons[4].pin)
    pin.drive_low()
    pin.drive_high()
    yield 0.5
    after = db.execute("SELECT count(*), max(level) FROM ratings WHERE source='button'").fetchone()
    check(results, "gpio_rating", after[0] == before + 1 and after[1] == 5
          and "Rất hài lòng" in find(app.root, "toast").text, after)
    shot(app, out, "home-button-thanks", results)

    # feedback with a bad then a good submission
    tap(app, "home.feedback")
    yield 0.4
    tap(app, "feedback.send")
    yield 0.2
    check(results, "feedback_error_vi", "Vui lòng nhập nội dung" in find(app.root, "feedback.error").text,
          find(app.root, "feedback.error").text)
    shot(app, out, "feedback-error", results)
    type_keys(app, "den hanh lang hong")
    tap(app, "feedback.kind.phan_anh")
    tap(app, "feedback.send")
    yield 0.4
    fb = db.execute("SELECT category, text FROM feedback").fetchall()
    check(results, "feedback_saved", fb == [("phan_anh", "den hanh lang hong")], fb)

    tap(app, "home.conduct")
    yield 0.4
    shot(app, out, "conduct", results)
    tap(app, "conduct.home")
    yield 0.2

    # admin behind the PIN
    tap(app, "home.admin")
    yield 0.3
    for k in "0000":
        tap(app, f"pin.{k}")
    tap(app, "pin.ok")
    yield 0.3
    check(results, "pin_wrong", app.sm.current == "pin" and "không đúng" in find(app.root, "pin.message").text)
    shot(app, out, "pin", results)
    for k in "2468":
        tap(app, f"pin.{k}")
    tap(app, "pin.ok")
    yield 1.0
    check(results, "admin_open", app.sm.current == "admin" and Path(find(app.root, "admin.chart").source).exists())
    shot(app, out, "admin", results)
    tap(app, "admin.tab.officer")
    yield 1.0
    shot(app, out, "admin-officer", results)
    usb = Path(cfg.admin.usb_path) / "USB-DISK"
    app.screen("admin").is_mount = lambda path: path == str(usb)  # a mounted stick, without mounting
    tap(app, "admin.export")
    yield 0.3
    exported = sorted(p.name for p in usb.glob("*.csv"))
    check(results, "usb_export", len(exported) == 2 and "Đã xuất" in find(app.root, "admin.message").text, exported)
    (usb / "danh-muc.json").write_text('[{"ma_tthc": "USB.1", "ten_tthc": "Thủ tục mới từ USB"}]', "utf-8")
    tap(app, "admin.import")
    yield 0.3
    check(results, "usb_import", app.kiosk.procedure("USB.1") is not None
          and "thêm 1" in find(app.root, "admin.message").text, find(app.root, "admin.message").text)
    shot(app, out, "admin-usb", results)
    tap(app, "admin.exit")
    yield 0.3

    # idle timeout discards half-entered input
    tap(app, "home.search")
    yield 0.3
    type_keys(app, "ket")
    yield 0.2
    app.last_activity -= cfg.idle_timeout_s + 1
    yield 1.5
    check(results, "idle_reset", app.sm.current == "home" and app.screen("search").query.text == "",
          (app.sm.current, app.screen("search").query.text))
    db.close()


if __name__ == "__main__":
    sys.exit(main())
