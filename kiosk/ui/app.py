"""The Kivy application: screens, idle reset, on-screen keyboard, GPIO buttons, sync.

``run_app`` sets Kivy up (window, no argv parsing, its home under the data folder)
before Kivy is imported, so importing this package's CLI never starts a window.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("thanthien.kiosk.ui")

THEMES = {
    False: {  # normal
        "c_bg": (0.96, 0.96, 0.94, 1), "c_fg": (0.1, 0.1, 0.1, 1), "c_muted": (0.35, 0.35, 0.35, 1),
        "c_panel": (1, 1, 1, 1), "c_header": (0.66, 0.07, 0.07, 1), "c_header_fg": (1, 0.95, 0.6, 1),
        "c_accent": (0.66, 0.07, 0.07, 1), "c_input": (1, 1, 1, 1), "c_danger": (0.75, 0.1, 0.1, 1),
    },
    True: {  # high contrast
        "c_bg": (0, 0, 0, 1), "c_fg": (1, 1, 1, 1), "c_muted": (0.85, 0.85, 0.85, 1),
        "c_panel": (0.08, 0.08, 0.08, 1), "c_header": (0, 0, 0, 1), "c_header_fg": (1, 0.9, 0, 1),
        "c_accent": (1, 0.9, 0, 1), "c_input": (0.12, 0.12, 0.12, 1), "c_danger": (1, 0.45, 0.45, 1),
    },
}
TONES = {  # (normal, high contrast) background; text is white unless listed in DARK_TEXT
    "primary": ((0.08, 0.35, 0.65, 1), (1, 0.9, 0, 1)),
    "good": ((0.13, 0.48, 0.2, 1), (0.2, 1, 0.3, 1)),
    "secondary": ((0.86, 0.88, 0.9, 1), (0.2, 0.2, 0.2, 1)),
    "quiet": ((0.9, 0.9, 0.88, 1), (0.1, 0.1, 0.1, 1)),
    "chosen": ((0.08, 0.35, 0.65, 1), (1, 0.9, 0, 1)),
    "result": ((1, 1, 1, 1), (0.15, 0.15, 0.15, 1)),
    "key": ((0.82, 0.84, 0.86, 1), (0.25, 0.25, 0.25, 1)),
    "level1": ((0.72, 0.11, 0.11, 1), (1, 0.3, 0.3, 1)),
    "level2": ((0.9, 0.38, 0.0, 1), (1, 0.6, 0.2, 1)),
    "level3": ((0.45, 0.45, 0.45, 1), (0.8, 0.8, 0.8, 1)),
    "level4": ((0.4, 0.6, 0.15, 1), (0.6, 1, 0.3, 1)),
    "level5": ((0.1, 0.45, 0.15, 1), (0.2, 1, 0.3, 1)),
}
DARK_TEXT = {False: {"secondary", "quiet", "result", "key"},
             True: {"primary", "good", "chosen", "level1", "level2", "level3", "level4", "level5"}}
FONT_STEPS = (0.85, 1.0, 1.15, 1.3, 1.5)


def run_app(config, *, db_path=None, size=None, screenshot_dir=None, pin_factory=None, driver=None) -> int:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    kivy_home = Path(config.data_dir) / "kivy"
    kivy_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KIVY_HOME", str(kivy_home))
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "keyboard_mode", "system")
    Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("graphics", "resizable", "0")
    if size:
        Config.set("graphics", "fullscreen", "0")
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
    else:
        Config.set("graphics", "fullscreen", "auto")
        Config.set("graphics", "show_cursor", "0")
    app = build_app(config, db_path=db_path, screenshot_dir=screenshot_dir, pin_factory=pin_factory)
    app.driver = driver
    _stop_on_signals(app)
    app.run()
    return 0


def _stop_on_signals(app) -> None:
    """SIGTERM (systemd stop) and SIGINT end the Kivy loop cleanly: buttons released,
    speech stopped, the database closed."""
    import signal

    from kivy.clock import Clock

    def handler(signum, _frame):
        log.info("signal %d: stopping the kiosk", signum)
        Clock.schedule_once(lambda dt: app.stop(), 0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def build_app(config, *, db_path=None, screenshot_dir=None, pin_factory=None):
    from kivy.app import App
    from kivy.clock import Clock
    from kivy.core.window import Window
    from kivy.properties import BooleanProperty, ColorProperty, NumericProperty
    from kivy.uix.floatlayout import FloatLayout
    from kivy.uix.screenmanager import NoTransition, ScreenManager

    from kiosk.core import Kiosk
    from kiosk.speech import Reader

    from . import screens
    from .widgets import KLabel, OnScreenKeyboard, Panel, load_kv

    class KioskApp(App):
        u = NumericProperty(1.0)
        fs = NumericProperty(1.0)
        contrast = BooleanProperty(False)
        c_bg = ColorProperty(THEMES[False]["c_bg"])
        c_fg = ColorProperty(THEMES[False]["c_fg"])
        c_muted = ColorProperty(THEMES[False]["c_muted"])
        c_panel = ColorProperty(THEMES[False]["c_panel"])
        c_header = ColorProperty(THEMES[False]["c_header"])
        c_header_fg = ColorProperty(THEMES[False]["c_header_fg"])
        c_accent = ColorProperty(THEMES[False]["c_accent"])
        c_input = ColorProperty(THEMES[False]["c_input"])
        c_danger = ColorProperty(THEMES[False]["c_danger"])
        keyboard_height = NumericProperty(0)

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.title = "thanthien – Bộ phận Một cửa"
            self.config_ = config
            self.screenshot_dir = Path(screenshot_dir) if screenshot_dir else None
            self.last_activity = time.monotonic()
            self.buttons = None
            self.sync = None
            self.driver = None
            self.started_at = time.monotonic()
            self._notify = None

        # -- look ------------------------------------------------------------------------
        # The kv rules pass app.contrast to these so that they bind to it and every widget
        # follows the theme switch by itself.
        def tone(self, name: str, down: bool, contrast: bool):
            colour = TONES.get(name, TONES["primary"])[1 if contrast else 0]
            return tuple(c * 0.8 for c in colour[:3]) + (1,) if down else colour

        def role_colour(self, role: str, muted: bool, _contrast: bool):
            if role == "header":
                return self.c_header_fg
            if role == "accent":
                return self.c_accent
            if role == "danger":
                return self.c_danger
            return self.c_muted if muted else self.c_fg

        def tone_fg(self, name: str, contrast: bool):
            if name in DARK_TEXT[contrast]:
                return (0, 0, 0, 1) if contrast else (0.1, 0.1, 0.1, 1)
            return (1, 1, 1, 1)

        def _fit(self, *_):
            self.u = round(min(Window.width / 800.0, Window.height / 480.0), 3)

        def toggle_contrast(self):
            # Colours first: labels re-evaluate role_colour() when `contrast` changes.
            for k, v in THEMES[not self.contrast].items():
                setattr(self, k, v)
            self.contrast = not self.contrast
            Window.clearcolor = self.c_bg

        def font_step(self, delta: int):
            i = min(range(len(FONT_STEPS)), key=lambda k: abs(FONT_STEPS[k] - self.fs))
            self.fs = FONT_STEPS[max(0, min(len(FONT_STEPS) - 1, i + delta))]

        # -- build -------------------------------------------------------------------------
        def build(self):
            self.kiosk = Kiosk(config, db_path=db_path)
            self.reader = Reader(config)
            self._fit()
            Window.clearcolor = self.c_bg
            load_kv()
            root = FloatLayout()
            self.sm = ScreenManager(transition=NoTransition())
            for name, cls in (("home", screens.HomeScreen), ("search", screens.SearchScreen),
                              ("procedure", screens.ProcedureScreen), ("rate", screens.RateScreen),
                              ("thanks", screens.ThanksScreen), ("followup", screens.FollowUpScreen),
                              ("feedback", screens.FeedbackScreen), ("conduct", screens.ConductScreen),
                              ("pin", screens.PinScreen), ("admin", screens.AdminScreen)):
                self.sm.add_widget(cls(name=name))
            self.sm.bind(current=self._entered)
            root.add_widget(self.sm)
            self.keyboard = OnScreenKeyboard(size_hint=(1, None), height=0, opacity=0, disabled=True,
                                             pos=(0, 0), padding=self.u * 4, spacing=self.u * 4)
            self.keyboard.tid = "keyboard"
            root.add_widget(self.keyboard)
            self.toast_panel = Panel(size_hint=(0.8, None), height=self.u * 90, opacity=0,
                                     pos_hint={"center_x": 0.5, "top": 0.97})
            self.toast_label = KLabel(text="", base=19, align="center", strong=True)
            self.toast_label.tid = "toast"
            self.toast_panel.add_widget(self.toast_label)
            root.add_widget(self.toast_panel)
            self._toast_event = None
            Window.bind(on_touch_down=lambda *_: self.touch_activity(), on_key_down=lambda *_: self.touch_activity())
            Clock.schedule_interval(self._every_second, 1)
            Clock.schedule_interval(lambda dt: self.screen("home").next_page() if self.sm.current == "home" else None, 10)
            self.kiosk.listeners.append(self._kiosk_event)
            self._start_buttons()
            self._start_sync()
            return root

        def on_start(self):
            self.current_screen().tick()
            self._entered(self.sm, self.sm.current)
            try:
                import sdnotify

                self._notify = sdnotify.SystemdNotifier().notify
                self._notify("READY=1")
            except ImportError:  # pragma: no cover - sdnotify is in the kiosk extra
                pass
            log.info("kiosk ready in %.2f s", time.monotonic() - self.started_at)
            if self.driver is not None:
                Clock.schedule_once(lambda dt: self.driver(self), 0.3)

        def on_stop(self):
            if self.buttons:
                self.buttons.close()
            if self.sync:
                self.sync.stop()
            self.reader.stop()
            self.kiosk.close()

        def _start_buttons(self):
            settings = config.buttons
            if not settings.enabled or not settings.buttons:
                return
            from devices.gpio import ButtonPanel

            try:
                self.buttons = ButtonPanel([(b.level, b.pin, b.led_pin) for b in settings.buttons], self._button_rating,
                                           bounce_ms=settings.bounce_ms, interval_s=settings.response_interval_s,
                                           pull_up=settings.pull_up, pin_factory=pin_factory)
            except Exception as exc:  # noqa: BLE001 - the screen still takes ratings
                log.error("answer buttons unavailable: %s", exc)

        def _button_rating(self, level: int):
            """GPIO thread: durable first, then thank the citizen on the UI thread."""
            self.kiosk.rate(level, "button")
            Clock.schedule_once(lambda dt: self._thank_button(level))

        def _thank_button(self, level: int):
            from kiosk.ratings import LEVEL_LABELS

            label = next((b.label for b in config.buttons.buttons if b.level == level and b.label), LEVEL_LABELS[level])
            self.touch_activity()
            self.toast(f"Cảm ơn Ông/Bà đã đánh giá: {label}")

        def _start_sync(self):
            if not config.station.url:
                return
            from kiosk.sync import StationSync, SyncError

            try:
                self.sync = StationSync.from_config(self.kiosk)
            except SyncError as exc:
                log.warning("sync off: %s", exc)
                return
            self.sync.start()

        def _kiosk_event(self, event, data):
            if event in ("rating", "feedback") and self.sync:
                self.sync.poke()

        # -- navigation ----------------------------------------------------------------------
        def screen(self, name):
            return self.sm.get_screen(name)

        def current_screen(self):
            return self.sm.current_screen

        def show(self, name, **kw):
            self.touch_activity()
            if name == "rate":
                self.screen("rate").procedure_code = kw.get("procedure")
            self.hide_keyboard()
            self.toast_panel.opacity = 0
            self.sm.current = name

        def open_procedure(self, code):
            self.screen("procedure").show(code)
            self.show("procedure")

        def go_home(self):
            self.hide_keyboard()
            self.sm.current = "home"

        def _entered(self, _sm, name):
            scr = self.screen(name)
            scr.tick()
            if self.screenshot_dir:
                # after layout and a couple of frames have settled
                Clock.schedule_once(lambda dt: self.save_screenshot(name), 1.5)

        def save_screenshot(self, name: str) -> Path | None:
            """PNG of what the screen shows now (the widget tree rendered off-screen, so it
            works under Xvfb too), written atomically."""
            if not self.screenshot_dir:
                return None
            self.screenshot_dir.mkdir(parents=True, exist_ok=True)
            path = self.screenshot_dir / f"kiosk-{name}-{Window.width}x{Window.height}.png"
            tmp = path.with_name(path.stem + ".tmp.png")
            self.root.export_to_png(str(tmp))
            tmp.replace(path)
            return path

        # -- idle, keyboard, toast ------------------------------------------------------------
        def touch_activity(self):
            self.last_activity = time.monotonic()

        def _every_second(self, _dt):
            self.current_screen().tick()
            if self._notify:
                self._notify("WATCHDOG=1")
            if self.sm.current != "home" and time.monotonic() - self.last_activity > config.idle_timeout_s:
                self.reset_all()

        def reset_all(self):
            """Idle timeout: forget half-entered input everywhere and go home."""
            log.info("idle for %d s: back to the home screen", config.idle_timeout_s)
            self.reader.stop()
            for scr in self.sm.screens:
                scr.reset()
            if self.contrast:
                self.toggle_contrast()
            self.fs = 1.0
            self.go_home()

        def on_input_focus(self, widget, focused):
            if focused:
                self.show_keyboard(widget)

        def show_keyboard(self, target):
            kb = self.keyboard
            kb.target = target
            kb.rows_spec = (["123", "456", "789", "0+"] if getattr(target, "numeric", False)
                            else ["1234567890", "QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM"])
            kb.height = self.u * 200
            kb.opacity, kb.disabled = 1, False
            self.current_screen().keyboard_room.height = kb.height
            target.focus = True

        def hide_keyboard(self):
            kb = self.keyboard
            kb.height, kb.opacity, kb.disabled, kb.target = 0, 0, True, None
            for scr in self.sm.screens:
                scr.keyboard_room.height = 0

        def toast(self, text: str, seconds: float = 4):
            self.toast_label.text = text
            self.toast_panel.opacity = 1
            if self._toast_event:
                self._toast_event.cancel()
            self._toast_event = Clock.schedule_once(lambda dt: setattr(self.toast_panel, "opacity", 0), seconds)

    app = KioskApp()
    Window.bind(size=app._fit)
    return app
