"""Widgets sized for a standing, often elderly citizen on any panel from 800×480 up.

Every size is ``app.u`` (1 at 800×480, 2.25 at 1920×1080) times a base in pixels of the
7" panel, and every font also times ``app.fs`` (A-/A+). Colours come from the app's
theme so the high-contrast switch changes everything at once. Each widget a test
needs to find carries a ``tid``.
"""

from __future__ import annotations

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.textinput import TextInput

KV = """
#:import dp kivy.metrics.dp

<KText>:
    font_size: app.u * self.base * app.fs
    color: app.role_colour(self.role, self.muted, app.contrast)
    text_size: self.width, None
    size_hint_y: None
    height: self.texture_size[1] + app.u * self.gap
    halign: self.align
    bold: self.strong

<KLabel>:
    font_size: app.u * self.base * app.fs
    color: app.role_colour(self.role, self.muted, app.contrast)
    text_size: self.size
    halign: self.align
    valign: 'middle'
    bold: self.strong

<KButton>:
    background_normal: ''
    background_down: ''
    background_color: app.tone(self.tone, self.state == 'down', app.contrast)
    color: app.tone_fg(self.tone, app.contrast)
    font_size: app.u * self.base * app.fs
    text_size: self.width - app.u * 12, self.height - app.u * 6
    halign: 'center'
    valign: 'middle'
    bold: True

<Panel>:
    canvas.before:
        Color:
            rgba: app.c_panel
        RoundedRectangle:
            pos: self.pos
            size: self.size
            radius: [app.u * 8]
    padding: app.u * 10
    spacing: app.u * 6

<KInput>:
    font_size: app.u * 20 * app.fs
    background_normal: ''
    background_active: ''
    background_color: app.c_input
    foreground_color: app.c_fg
    cursor_color: app.c_fg
    hint_text_color: app.c_muted
    padding: app.u * 8, app.u * 8
    write_tab: False
    canvas.after:
        Color:
            rgba: app.c_accent if self.focus else app.c_muted
        Line:
            rectangle: self.x, self.y, self.width, self.height
            width: app.u * (2 if self.focus else 1)

<KioskScreen>:
    canvas.before:
        Color:
            rgba: app.c_bg
        Rectangle:
            pos: self.pos
            size: self.size

<Header>:
    size_hint_y: None
    height: app.u * 52
    padding: app.u * 8, app.u * 4
    spacing: app.u * 8
    canvas.before:
        Color:
            rgba: app.c_header
        Rectangle:
            pos: self.pos
            size: self.size
"""


class KText(Label):
    """A paragraph: wraps to the width and grows to its text's height."""
    base = NumericProperty(16)
    muted = BooleanProperty(False)
    strong = BooleanProperty(False)
    align = StringProperty("left")
    role = StringProperty("")  # "", "header", "accent", "danger"
    gap = NumericProperty(4)


class KLabel(Label):
    """Text filling a fixed box (titles, captions)."""
    base = NumericProperty(16)
    muted = BooleanProperty(False)
    strong = BooleanProperty(False)
    align = StringProperty("left")
    role = StringProperty("")


class KButton(Button):
    base = NumericProperty(18)
    tone = StringProperty("primary")


class Panel(BoxLayout):
    pass


class Header(BoxLayout):
    pass


class KInput(TextInput):
    """A text field that calls up the kiosk's own on-screen keyboard."""
    numeric = BooleanProperty(False)
    max_chars = NumericProperty(4000)

    def on_focus(self, _inst, focused):
        app = App.get_running_app()
        if app is not None:
            app.on_input_focus(self, focused)

    def insert_text(self, substring, from_undo=False):
        room = self.max_chars - len(self.text)
        if room <= 0:
            return None
        if self.numeric:
            substring = "".join(c for c in substring if c.isdigit() or c in " +")
        return super().insert_text(substring[:room], from_undo=from_undo)


class OnScreenKeyboard(GridLayout):
    """Letters without diacritics (search ignores them), digits, space, backspace; with
    Telex switched on, "dd", "aa", "ow", "s/f/r/x/j"… become Vietnamese letters and tones."""

    target = ObjectProperty(None, allownone=True)
    telex = BooleanProperty(False)
    rows_spec = ListProperty(["1234567890", "QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM"])

    def __init__(self, **kwargs):
        super().__init__(cols=1, **kwargs)
        self.bind(rows_spec=lambda *_: self._build())
        self._build()

    def _build(self):
        self.clear_widgets()
        app = App.get_running_app()
        for row in self.rows_spec:
            line = BoxLayout(spacing=app.u * 4)
            for ch in row:
                b = KButton(text=ch, tone="key", base=20)
                b.tid = f"key.{ch}"
                b.bind(on_release=lambda btn, c=ch: self.type(c.lower()))
                line.add_widget(b)
            if row == self.rows_spec[-1]:
                back = KButton(text="Xóa", tone="key", base=16, size_hint_x=1.6)
                back.tid = "key.backspace"
                back.bind(on_release=lambda *_: self.backspace())
                line.add_widget(back)
            self.add_widget(line)
        bottom = BoxLayout(spacing=app.u * 4)
        self.telex_button = KButton(text="Gõ dấu: tắt", tone="key", base=15, size_hint_x=1.4)
        self.telex_button.tid = "key.telex"
        self.telex_button.bind(on_release=lambda *_: setattr(self, "telex", not self.telex))
        space = KButton(text="Dấu cách", tone="key", base=16, size_hint_x=3)
        space.tid = "key.space"
        space.bind(on_release=lambda *_: self.type(" "))
        clear = KButton(text="Xóa hết", tone="key", base=16, size_hint_x=1.2)
        clear.tid = "key.clear"
        clear.bind(on_release=lambda *_: self.clear())
        hide = KButton(text="Ẩn bàn phím", tone="key", base=15, size_hint_x=1.4)
        hide.tid = "key.hide"
        hide.bind(on_release=lambda *_: app.hide_keyboard())
        for w in (self.telex_button, space, clear, hide):
            bottom.add_widget(w)
        self.add_widget(bottom)

    def on_telex(self, *_):
        if hasattr(self, "telex_button"):
            self.telex_button.text = "Gõ dấu: Telex" if self.telex else "Gõ dấu: tắt"

    def type(self, ch: str) -> None:
        if self.target is None:
            return
        if self.telex and ch != " ":
            from kiosk.telex import apply_key

            text = self.target.text
            cut = len(text) - len(text.split(" ")[-1])
            word = apply_key(text[cut:], ch)
            self.target.text = text[:cut] + word
            self.target.text = self.target.text[: int(self.target.max_chars)]
            self.target.cursor = (len(self.target.text), 0)
        else:
            self.target.insert_text(ch)
        self.dispatch_change()

    def backspace(self) -> None:
        if self.target is not None:
            self.target.do_backspace()
            self.dispatch_change()

    def clear(self) -> None:
        if self.target is not None:
            self.target.text = ""
            self.dispatch_change()

    def dispatch_change(self) -> None:
        app = App.get_running_app()
        app.touch_activity()


def load_kv() -> None:
    Builder.load_string(KV)
