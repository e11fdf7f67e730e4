"""The kiosk's screens. Thin: every decision is a call into ``kiosk.core.Kiosk``."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

from kivy.app import App
from kivy.clock import Clock
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.screenmanager import Screen
from kivy.uix.scrollview import ScrollView
from kivy.uix.widget import Widget

from kiosk import content, pictures, ratings
from kiosk.catalogue import CatalogueError
from kiosk.ratings import FACTORS, LEVEL_LABELS, REASONS, InputError

from .widgets import Header, KButton, KInput, KLabel, KText, Panel

log = logging.getLogger("thanthien.kiosk.ui")


def tag(widget, tid: str):
    widget.tid = tid
    return widget


def scroller(tid: str) -> tuple[ScrollView, BoxLayout]:
    app = App.get_running_app()
    sv = tag(ScrollView(do_scroll_x=False, bar_width=app.u * 10, scroll_type=["bars", "content"]), tid)
    box = BoxLayout(orientation="vertical", size_hint_y=None, spacing=app.u * 6, padding=[0, 0, app.u * 14, 0])
    box.bind(minimum_height=box.setter("height"))
    sv.add_widget(box)
    return sv, box


class KioskScreen(Screen):
    """A screen with the common header and a body; ``reset()`` forgets half-entered input."""

    title = "Bộ phận Một cửa"
    home_button = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.app = App.get_running_app()
        outer = BoxLayout(orientation="vertical")
        outer.add_widget(self.header())
        self.body = BoxLayout(orientation="vertical", padding=self.app.u * 10, spacing=self.app.u * 8)
        outer.add_widget(self.body)
        self.keyboard_room = Widget(size_hint_y=None, height=0)
        outer.add_widget(self.keyboard_room)
        self.add_widget(outer)
        self.build()

    def header(self) -> Header:
        app = self.app
        h = Header()
        if self.home_button:
            h.add_widget(tag(KButton(text="< Trang chủ", tone="secondary", size_hint_x=None, width=app.u * 130,
                                     base=16, on_release=lambda *_: app.go_home()), f"{self.name}.home"))
        else:
            emblem = app.kiosk.config.ward.emblem
            if emblem and Path(emblem).exists():
                h.add_widget(Image(source=str(emblem), size_hint_x=None, width=app.u * 44))
        h.add_widget(tag(KLabel(text=self.title, base=20, strong=True, role="header"), f"{self.name}.title"))
        self.clock_label = KLabel(text="", base=15, size_hint_x=None, width=app.u * 190, align="right",
                                  role="header")
        h.add_widget(self.clock_label)
        return h

    def build(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def tick(self) -> None:
        now = datetime.now()
        self.clock_label.text = f"{now:%H:%M}  {now:%d/%m/%Y}"


# -- home / attract --------------------------------------------------------------------

class HomeScreen(KioskScreen):
    home_button = False

    def __init__(self, **kwargs):
        self.page = 0
        super().__init__(**kwargs)

    @property
    def title(self):
        return App.get_running_app().kiosk.config.ward.name

    def build(self):
        app, u = self.app, self.app.u
        row = BoxLayout(spacing=u * 10)
        left = BoxLayout(orientation="vertical", spacing=u * 8, size_hint_x=0.42)
        left.add_widget(tag(KButton(text="Tra cứu thủ tục hành chính", base=21,
                                    on_release=lambda *_: app.show("search")), "home.search"))
        left.add_widget(tag(KButton(text="Đánh giá mức độ hài lòng", base=21, tone="good",
                                    on_release=lambda *_: app.show("rate")), "home.rate"))
        left.add_widget(tag(KButton(text="Góp ý, phản ánh", base=21, tone="secondary",
                                    on_release=lambda *_: app.show("feedback")), "home.feedback"))
        small = BoxLayout(spacing=u * 8, size_hint_y=0.55)
        small.add_widget(tag(KButton(text="Quy tắc ứng xử", base=16, tone="secondary",
                                     on_release=lambda *_: app.show("conduct")), "home.conduct"))
        small.add_widget(tag(KButton(text="Quản trị", base=14, tone="quiet", size_hint_x=0.6,
                                     on_release=lambda *_: app.show("pin")), "home.admin"))
        left.add_widget(small)
        row.add_widget(left)
        self.panel = Panel(orientation="vertical")
        row.add_widget(self.panel)
        self.body.add_widget(row)
        self.hotline_bar = tag(KLabel(base=16, strong=True, size_hint_y=None, height=u * 30, align="center"),
                               "home.hotlines")
        self.body.add_widget(self.hotline_bar)
        self.refresh()

    def pages(self) -> list[str]:
        pages = ["slogans", "hours"]
        if self.app.kiosk.announcements(1):
            pages.append("announcements")
        return pages

    def refresh(self, *_):
        app, u = self.app, self.app.u
        ward = app.kiosk.config.ward
        self.hotline_bar.text = "   ".join(f"{h.label}: {h.number}" for h in ward.hotlines[:2]) or content.MOTTO
        p = self.panel
        p.clear_widgets()
        pages = self.pages()
        page = pages[self.page % len(pages)]
        if page == "slogans":
            p.add_widget(tag(KLabel(text=content.MOTTO, base=17, strong=True, align="center", size_hint_y=None,
                                    height=u * 28, role="accent"), "home.motto"))
            # Weights: each slogan line is one share of the height; titles are fixed.
            top = BoxLayout(spacing=u * 10, size_hint_y=4.3)
            for title, lines in content.SLOGANS[:2]:
                col = BoxLayout(orientation="vertical")
                col.add_widget(KLabel(text=f"“{title}”", base=18, strong=True, size_hint_y=None, height=u * 26,
                                      role="accent"))
                for line in lines:
                    col.add_widget(KLabel(text=line, base=16))
                top.add_widget(col)
            p.add_widget(top)
            title, lines = content.SLOGANS[2]
            p.add_widget(KLabel(text=f"“{title}”", base=18, strong=True, size_hint_y=None, height=u * 26,
                                role="accent"))
            for line in lines:
                p.add_widget(KLabel(text=line, base=14.5))
        elif page == "hours":
            p.add_widget(KLabel(text="Thời gian tiếp nhận hồ sơ", base=18, strong=True, size_hint_y=None,
                                height=u * 28, role="accent"))
            for line in ward.reception_hours:
                p.add_widget(KText(text=line, base=16))
            p.add_widget(KLabel(text="Đường dây nóng", base=18, strong=True, size_hint_y=None, height=u * 30,
                                role="accent"))
            for h in ward.hotlines:
                p.add_widget(KText(text=f"{h.label}: [b]{h.number}[/b]", markup=True, base=16))
            p.add_widget(Widget())
        else:
            p.add_widget(KLabel(text="Thông báo của phường", base=18, strong=True, size_hint_y=None, height=u * 28,
                                role="accent"))
            for a in app.kiosk.announcements(3):
                p.add_widget(KText(text=a["title"], base=16, strong=True))
                p.add_widget(KText(text=_clip(a["text"], 220), base=14.5))
            p.add_widget(Widget())

    def next_page(self) -> None:
        self.page += 1
        self.refresh()

    def reset(self):
        self.page = 0
        self.refresh()


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + "…"


# -- search and browse -------------------------------------------------------------------

class SearchScreen(KioskScreen):
    title = "Tra cứu thủ tục hành chính"

    def build(self):
        u = self.app.u
        self.field: str | None = None
        top = BoxLayout(size_hint_y=None, height=u * 48, spacing=u * 8)
        self.query = tag(KInput(hint_text="Gõ tên thủ tục, không cần dấu (ví dụ: khai sinh)", multiline=False,
                                max_chars=100), "search.input")
        self.query.bind(text=lambda *_: self._schedule())
        top.add_widget(self.query)
        top.add_widget(tag(KButton(text="Tất cả lĩnh vực", tone="secondary", base=15, size_hint_x=None,
                                   width=u * 170, on_release=lambda *_: self.choose_field(None)), "search.all"))
        self.body.add_widget(top)
        row = BoxLayout(spacing=u * 10)
        fields_view, self.fields_box = scroller("search.fields")
        fields_view.size_hint_x = 0.34
        row.add_widget(fields_view)
        results_view, self.results = scroller("search.results")
        row.add_widget(results_view)
        self.body.add_widget(row)
        self.status = tag(KLabel(base=14, muted=True, size_hint_y=None, height=u * 22), "search.status")
        self.body.add_widget(self.status)
        self._event = None

    def on_pre_enter(self, *_):
        self.fill_fields()
        self.update()

    def on_enter(self, *_):
        self.app.show_keyboard(self.query)

    def fill_fields(self):
        u = self.app.u
        self.fields_box.clear_widgets()
        self.fields_box.add_widget(KLabel(text="Lĩnh vực", base=16, strong=True, size_hint_y=None, height=u * 26))
        for name, count in self.app.kiosk.fields():
            b = tag(KButton(text=f"{name} ({count})", tone="chosen" if name == self.field else "secondary", base=15,
                            size_hint_y=None, height=u * 46), f"search.field.{name}")
            b.bind(on_release=lambda _b, n=name: self.choose_field(n))
            self.fields_box.add_widget(b)

    def choose_field(self, name):
        self.field = name
        self.app.touch_activity()
        self.fill_fields()
        self.update()

    def _schedule(self):
        if self._event:
            self._event.cancel()
        self._event = Clock.schedule_once(lambda dt: self.update(), 0.15)

    def update(self):
        u = self.app.u
        kiosk = self.app.kiosk
        q = self.query.text.strip()
        if q:
            hits = [h.to_dict() for h in kiosk.search(q, field=self.field, limit=40)]
        elif self.field:
            hits = kiosk.in_field(self.field)
        else:
            hits = []
        self.results.clear_widgets()
        for h in hits:
            b = tag(KButton(text=h["name"], tone="result", base=16, size_hint_y=None, height=u * 62,
                            halign="left"), f"search.result.{h['code']}")
            b.bind(on_release=lambda _b, c=h["code"]: self.app.open_procedure(c))
            self.results.add_widget(b)
        where = f" trong lĩnh vực {self.field}" if self.field else ""
        if q:
            self.status.text = f"Tìm thấy {len(hits)} thủ tục{where}" if hits else \
                "Không tìm thấy thủ tục phù hợp. Hãy thử từ khác, ít từ hơn, hoặc chọn lĩnh vực bên trái."
        else:
            self.status.text = (f"{len(hits)} thủ tục{where}" if self.field
                                else f"Có {kiosk.procedure_count()} thủ tục. Gõ tên hoặc chọn lĩnh vực.")

    def reset(self):
        self.query.text = ""
        self.field = None


# -- procedure page ---------------------------------------------------------------------

class ProcedureScreen(KioskScreen):
    title = "Chi tiết thủ tục"

    def build(self):
        app, u = self.app, self.app.u
        self.code = None
        row = BoxLayout(spacing=u * 10)
        view, self.content = scroller("procedure.scroll")
        row.add_widget(view)
        side = BoxLayout(orientation="vertical", size_hint_x=None, width=u * 210, spacing=u * 6)
        self.qr = tag(Image(size_hint_y=None, height=u * 150, fit_mode="contain"), "procedure.qr")
        side.add_widget(self.qr)
        self.qr_caption = KText(text="", base=13, align="center", muted=True)
        side.add_widget(self.qr_caption)
        self.read_button = tag(KButton(text="Đọc to", base=18, tone="good", size_hint_y=None, height=u * 46,
                                       on_release=lambda *_: self.read_aloud()), "procedure.read")
        side.add_widget(self.read_button)
        sizes = BoxLayout(size_hint_y=None, height=u * 44, spacing=u * 6)
        sizes.add_widget(tag(KButton(text="A-", base=18, tone="secondary", on_release=lambda *_: app.font_step(-1)),
                             "procedure.smaller"))
        sizes.add_widget(tag(KButton(text="A+", base=18, tone="secondary", on_release=lambda *_: app.font_step(1)),
                             "procedure.larger"))
        side.add_widget(sizes)
        side.add_widget(tag(KButton(text="Tương phản cao", base=15, tone="secondary", size_hint_y=None,
                                    height=u * 44, on_release=lambda *_: app.toggle_contrast()), "procedure.contrast"))
        side.add_widget(tag(KButton(text="Đánh giá thủ tục này", base=15, tone="secondary", size_hint_y=None,
                                    height=u * 44, on_release=lambda *_: app.show("rate", procedure=self.code)),
                            "procedure.rate"))
        side.add_widget(Widget())
        row.add_widget(side)
        self.body.add_widget(row)

    def show(self, code: str):
        self.code = code
        self.render()

    def render(self):
        app, u = self.app, self.app.u
        p = app.kiosk.procedure(self.code) if self.code else None
        box = self.content
        box.clear_widgets()
        if p is None:
            box.add_widget(KText(text="Không tìm thấy thủ tục này.", base=18))
            return
        box.add_widget(tag(KText(text=_esc(p.name), base=21, strong=True), "procedure.name"))
        facts = [("Lĩnh vực", p.field), ("Cấp thực hiện", p.level), ("Cơ quan thực hiện", p.agency),
                 ("Thời hạn giải quyết", p.time_summary), ("Phí, lệ phí", p.fee_summary)]
        for label, value in facts:
            if value:
                box.add_widget(KText(text=f"[b]{label}:[/b] {_esc(value)}", markup=True, base=16))
        if p.channels:
            section(box, "Nơi nộp, cách thức thực hiện")
            for c in p.channels:
                extra = "; ".join(x for x in (c.time, c.fee) if x and (c.time, c.fee) != (p.time_summary, p.fee_summary))
                line = f"• [b]{_esc(c.form)}[/b]" + (f": {_esc(c.note)}" if c.note else "") + (f" ({_esc(extra)})" if extra else "")
                box.add_widget(KText(text=line, markup=True, base=15.5))
        if p.documents:
            section(box, "Thành phần hồ sơ")
            for g in p.documents:
                if g.case:
                    box.add_widget(KText(text=f"[i]{_esc(g.case)}[/i]", markup=True, base=16, strong=True))
                for d in g.documents:
                    counts = []
                    if d.originals:
                        counts.append(f"bản chính: {d.originals}")
                    if d.copies:
                        counts.append(f"bản sao: {d.copies}")
                    box.add_widget(KText(text=f"• {_esc(d.name)}" + (f" [i]({', '.join(counts)})[/i]" if counts else ""),
                                         markup=True, base=15.5))
        for title, items, numbered in (("Trình tự thực hiện", p.steps, True), ("Kết quả", p.results, False),
                                       ("Yêu cầu, điều kiện", p.conditions, False),
                                       ("Căn cứ pháp lý", p.legal_basis, False)):
            if items:
                section(box, title)
                for i, item in enumerate(items, 1):
                    prefix = f"{i}. " if numbered and not item.lower().startswith("bước") else "• "
                    box.add_widget(KText(text=prefix + _esc(item), markup=True, base=15.5))
        box.add_widget(Widget(size_hint_y=None, height=u * 20))
        if p.online_url:
            self.qr.source = str(pictures.qr_png(p.online_url, Path(app.kiosk.config.data_dir) / "qr"))
            self.qr.opacity = 1
            self.qr_caption.text = "Quét mã QR để nộp hồ sơ trực tuyến"
        else:
            self.qr.source = ""
            self.qr.opacity = 0
            self.qr_caption.text = "Thủ tục này nộp trực tiếp tại Bộ phận Một cửa"
        self.read_button.text = "Đọc to"

    def read_aloud(self):
        app = self.app
        if app.reader.speaking:
            app.reader.stop()
            self.read_button.text = "Đọc to"
            return
        p = app.kiosk.procedure(self.code)
        if p is None:
            return
        from kiosk.speech import spoken_summary

        self.read_button.text = "Dừng đọc"
        app.reader.read(spoken_summary(p), on_done=lambda err: Clock.schedule_once(lambda dt: self._read_done(err)))

    def _read_done(self, err):
        self.read_button.text = "Đọc to"
        if err:
            self.app.toast("Không đọc được lúc này. Xin vui lòng xem trên màn hình.")

    def on_leave(self, *_):
        self.app.reader.stop()


def section(box, title: str) -> None:
    app = App.get_running_app()
    box.add_widget(Widget(size_hint_y=None, height=app.u * 4))
    box.add_widget(KText(text=title, base=18, strong=True, role="accent"))


def _esc(text: str) -> str:
    """Catalogue text is shown, never interpreted as Kivy markup."""
    return text.replace("&", "&amp;").replace("[", "&bl;").replace("]", "&br;")


# -- satisfaction ---------------------------------------------------------------------------

class RateScreen(KioskScreen):
    title = "Đánh giá mức độ hài lòng"

    def build(self):
        app, u = self.app, self.app.u
        self.procedure_code = None
        self.body.add_widget(tag(KLabel(text="Ông/Bà hài lòng thế nào với sự phục vụ hôm nay?", base=20, strong=True,
                                        align="center", size_hint_y=None, height=u * 44), "rate.question"))
        grid = BoxLayout(spacing=u * 8)
        for level in (5, 4, 3, 2, 1):
            b = tag(KButton(text=f"{level}\n{LEVEL_LABELS[level]}", tone=f"level{level}", base=19),
                    f"rate.level.{level}")
            b.bind(on_release=lambda _b, lv=level: self.rate(lv))
            grid.add_widget(b)
        self.body.add_widget(grid)
        hint = "Ông/Bà cũng có thể bấm nút trên bàn." if app.kiosk.config.buttons.enabled else ""
        self.body.add_widget(KLabel(text=hint, base=15, muted=True, align="center", size_hint_y=None, height=u * 26))

    def rate(self, level: int):
        app = self.app
        details = {}
        if self.procedure_code:
            p = app.kiosk.procedure(self.procedure_code)
            details = {"procedure_code": self.procedure_code, "field_name": p.field if p else None}
        try:
            uid = app.kiosk.rate(level, "screen", follow_up=True, **details)
        except Exception as exc:  # noqa: BLE001 - tell the citizen, keep the kiosk up
            log.exception("rating not stored")
            app.toast(f"Chưa lưu được đánh giá ({exc.__class__.__name__}). Xin vui lòng báo cán bộ.")
            return
        app.screen("thanks").show(uid, level)
        app.show("thanks")

    def reset(self):
        self.procedure_code = None


class ThanksScreen(KioskScreen):
    title = "Cảm ơn Ông/Bà"

    def build(self):
        u = self.app.u
        self.rating_uid = None
        self.level = None
        self.message = tag(KLabel(text="", base=24, strong=True, align="center"), "thanks.message")
        self.body.add_widget(self.message)
        self.body.add_widget(KLabel(text="Ý kiến của Ông/Bà giúp chúng tôi phục vụ tốt hơn.", base=17, align="center",
                                    size_hint_y=None, height=u * 34))
        row = BoxLayout(size_hint_y=None, height=u * 70, spacing=u * 10)
        row.add_widget(tag(KButton(text="Góp thêm ý kiến (không bắt buộc)", base=17, tone="secondary",
                                   on_release=lambda *_: self.more()), "thanks.more"))
        row.add_widget(tag(KButton(text="Hoàn tất", base=19, on_release=lambda *_: self.done()), "thanks.done"))
        self.body.add_widget(row)
        self._auto = None

    def show(self, uid: str, level: int):
        self.rating_uid, self.level = uid, level
        self.message.text = f"Cảm ơn Ông/Bà đã đánh giá: {LEVEL_LABELS[level]}"

    def on_enter(self, *_):
        self._auto = Clock.schedule_once(lambda dt: self.done(), 20)

    def on_leave(self, *_):
        if self._auto:
            self._auto.cancel()

    def more(self):
        self.app.screen("followup").start(self.rating_uid, self.level)
        self.rating_uid = None
        self.app.show("followup")

    def done(self):
        if self.rating_uid:
            self.app.kiosk.release_rating(self.rating_uid)
            self.rating_uid = None
        self.app.go_home()

    def reset(self):
        if self.rating_uid:
            self.app.kiosk.release_rating(self.rating_uid)
            self.rating_uid = None


class FollowUpScreen(KioskScreen):
    """Optional details of a rating: officer, SIPAS factors, reasons, free text."""

    title = "Góp thêm ý kiến"

    def build(self):
        u = self.app.u
        self.rating_uid = None
        self.level = 5
        self.officer = None
        self.field = None
        self.factors: dict[str, int] = {}
        self.reasons: set[str] = set()
        view, self.box = scroller("followup.scroll")
        self.body.add_widget(view)
        row = BoxLayout(size_hint_y=None, height=u * 52, spacing=u * 10)
        self.error = tag(KLabel(text="", base=15, role="danger"), "followup.error")
        row.add_widget(self.error)
        row.add_widget(tag(KButton(text="Gửi ý kiến", base=19, size_hint_x=None, width=u * 200,
                                   on_release=lambda *_: self.submit()), "followup.send"))
        self.body.add_widget(row)

    def start(self, uid: str, level: int):
        self.rating_uid, self.level = uid, level
        self.officer, self.field, self.factors, self.reasons = None, None, {}, set()
        self.render()

    def render(self):
        app, u = self.app, self.app.u
        box = self.box
        box.clear_widgets()
        self.error.text = ""
        officers = app.kiosk.config.officers
        if officers:
            section(box, "Cán bộ đã tiếp Ông/Bà")
            grid = GridLayout(cols=3, spacing=u * 6, size_hint_y=None)
            grid.bind(minimum_height=grid.setter("height"))
            for o in officers:
                card = BoxLayout(orientation="horizontal", size_hint_y=None, height=u * 64, spacing=u * 4)
                if o.photo and Path(o.photo).exists():
                    card.add_widget(Image(source=str(o.photo), size_hint_x=None, width=u * 52))
                b = tag(KButton(text=f"{o.name}\n[size={int(u * 12 * app.fs)}]{o.title}[/size]", markup=True, base=15,
                                tone="chosen" if o.id == self.officer else "secondary"), f"followup.officer.{o.id}")
                b.bind(on_release=lambda _b, oid=o.id: self._set("officer", oid))
                card.add_widget(b)
                grid.add_widget(card)
            box.add_widget(grid)
        fields = [name for name, _count in app.kiosk.fields()]
        if fields:
            section(box, "Lĩnh vực Ông/Bà đến giải quyết")
            grid = GridLayout(cols=3, spacing=u * 6, size_hint_y=None)
            grid.bind(minimum_height=grid.setter("height"))
            for name in fields:
                b = tag(KButton(text=name, base=14.5, size_hint_y=None, height=u * 44,
                                tone="chosen" if name == self.field else "secondary"), f"followup.field.{name}")
                b.bind(on_release=lambda _b, n=name: self._set("field", n))
                grid.add_widget(b)
            box.add_widget(grid)
        section(box, "Đánh giá theo từng nội dung (1 = rất không hài lòng, 5 = rất hài lòng)")
        for code, label in FACTORS.items():
            line = BoxLayout(size_hint_y=None, height=u * 46, spacing=u * 4)
            line.add_widget(KLabel(text=label, base=15, size_hint_x=2.6))
            for lv in range(1, 6):
                b = tag(KButton(text=str(lv), base=17, tone=f"level{lv}" if self.factors.get(code) == lv else "key"),
                        f"followup.factor.{code}.{lv}")
                b.bind(on_release=lambda _b, c=code, v=lv: self._set_factor(c, v))
                line.add_widget(b)
            box.add_widget(line)
        if self.level <= 3 or any(v <= 3 for v in self.factors.values()):
            section(box, "Điều gì chưa hài lòng? (chọn một hoặc nhiều)")
            grid = GridLayout(cols=2, spacing=u * 6, size_hint_y=None)
            grid.bind(minimum_height=grid.setter("height"))
            for code, label in REASONS.items():
                b = tag(KButton(text=label, base=15, size_hint_y=None, height=u * 44,
                                tone="chosen" if code in self.reasons else "secondary"), f"followup.reason.{code}")
                b.bind(on_release=lambda _b, c=code: self._toggle_reason(c))
                grid.add_widget(b)
            box.add_widget(grid)
        section(box, "Ý kiến khác (không bắt buộc)")
        keep = getattr(self, "comment", None)
        self.comment = tag(KInput(hint_text="Chạm để viết…", size_hint_y=None, height=u * 80, max_chars=2000),
                           "followup.comment")
        if keep is not None:
            self.comment.text = keep.text
        box.add_widget(self.comment)

    def _set(self, attr, value):
        setattr(self, attr, None if getattr(self, attr) == value else value)
        self.render()

    def _set_factor(self, code, value):
        self.factors[code] = value
        self.render()

    def _toggle_reason(self, code):
        self.reasons ^= {code}
        self.render()

    def submit(self):
        app = self.app
        try:
            app.kiosk.finish_rating(self.rating_uid, officer_id=self.officer, field_name=self.field,
                                    factors=dict(self.factors),
                                    reasons=sorted(self.reasons), comment=self.comment.text or None)
        except InputError as exc:
            self.error.text = exc.message_vi
            return
        self.rating_uid = None
        app.toast("Đã ghi nhận ý kiến. Trân trọng cảm ơn Ông/Bà!")
        app.go_home()

    def reset(self):
        if self.rating_uid:
            self.app.kiosk.release_rating(self.rating_uid)
            self.rating_uid = None
        if getattr(self, "comment", None) is not None:
            self.comment.text = ""


# -- feedback ---------------------------------------------------------------------------------

class FeedbackScreen(KioskScreen):
    title = "Góp ý, phản ánh"

    def build(self):
        u = self.app.u
        self.category = "gop_y"
        kinds = BoxLayout(size_hint_y=None, height=u * 46, spacing=u * 8)
        self.kind_buttons = {}
        for code, label in ratings.FEEDBACK_CATEGORIES.items():
            b = tag(KButton(text=label, base=17), f"feedback.kind.{code}")
            b.bind(on_release=lambda _b, c=code: self.set_category(c))
            self.kind_buttons[code] = b
            kinds.add_widget(b)
        self.body.add_widget(kinds)
        self.text = tag(KInput(hint_text="Nội dung góp ý, phản ánh (bật Gõ dấu: Telex để viết có dấu)", max_chars=4000),
                        "feedback.text")
        self.body.add_widget(self.text)
        row = BoxLayout(size_hint_y=None, height=u * 46, spacing=u * 8)
        self.name_input = tag(KInput(hint_text="Họ tên (không bắt buộc)", multiline=False, max_chars=200), "feedback.name")
        self.phone = tag(KInput(hint_text="Số điện thoại (không bắt buộc)", multiline=False, max_chars=20,
                                numeric=True), "feedback.phone")
        row.add_widget(self.name_input)
        row.add_widget(self.phone)
        self.body.add_widget(row)
        bottom = BoxLayout(size_hint_y=None, height=u * 48, spacing=u * 8)
        self.error = tag(KLabel(text="", base=15, role="danger"), "feedback.error")
        bottom.add_widget(self.error)
        bottom.add_widget(tag(KButton(text="Gửi", base=19, size_hint_x=None, width=u * 160,
                                      on_release=lambda *_: self.submit()), "feedback.send"))
        self.body.add_widget(bottom)
        self.set_category("gop_y")

    def set_category(self, code):
        self.category = code
        for c, b in self.kind_buttons.items():
            b.tone = "chosen" if c == code else "secondary"

    def on_enter(self, *_):
        self.app.show_keyboard(self.text)

    def submit(self):
        app = self.app
        try:
            app.kiosk.feedback(self.category, self.text.text, phone=self.phone.text or None, name=self.name_input.text or None)
        except InputError as exc:
            self.error.text = exc.message_vi
            return
        self.reset()
        app.toast("Đã ghi nhận. Phường sẽ xem xét và phản hồi nếu Ông/Bà để lại số điện thoại.")
        app.go_home()

    def reset(self):
        for w in (self.text, self.name_input, self.phone):
            w.text = ""
        self.error.text = ""
        self.set_category("gop_y")


class ConductScreen(KioskScreen):
    title = "Quy tắc ứng xử"

    def build(self):
        view, box = scroller("conduct.scroll")
        box.add_widget(KText(text=content.CODE_OF_CONDUCT_TITLE, base=19, strong=True, role="accent"))
        for i, rule in enumerate(content.CODE_OF_CONDUCT, 1):
            box.add_widget(KText(text=f"{i}. {rule}", base=16.5))
        for title, lines in content.SLOGANS:
            box.add_widget(KText(text=f"“{title}”: " + "; ".join(lines) + ".", base=16.5))
        self.body.add_widget(view)


# -- admin -------------------------------------------------------------------------------------

class PinScreen(KioskScreen):
    title = "Quản trị – nhập mã PIN"
    MAX_TRIES, LOCK_S = 5, 60

    def build(self):
        u = self.app.u
        self.tries, self.locked_until = 0, 0.0
        self.pin = ""
        self.dots = tag(KLabel(text="", base=28, align="center", size_hint_y=None, height=u * 44), "pin.dots")
        self.body.add_widget(self.dots)
        self.message = tag(KLabel(text="", base=15, align="center", size_hint_y=None, height=u * 26,
                                  role="danger"), "pin.message")
        self.body.add_widget(self.message)
        pad = GridLayout(cols=3, spacing=u * 6, padding=[u * 150, 0])
        for key in "123456789":
            pad.add_widget(tag(KButton(text=key, base=22, tone="key", on_release=lambda b: self.press(b.text)),
                               f"pin.{key}"))
        pad.add_widget(tag(KButton(text="Xóa", base=17, tone="key", on_release=lambda *_: self.press("back")),
                           "pin.back"))
        pad.add_widget(tag(KButton(text="0", base=22, tone="key", on_release=lambda b: self.press("0")), "pin.0"))
        pad.add_widget(tag(KButton(text="Vào", base=18, on_release=lambda *_: self.submit()), "pin.ok"))
        self.body.add_widget(pad)

    def press(self, key):
        if key == "back":
            self.pin = self.pin[:-1]
        elif len(self.pin) < 12:
            self.pin += key
        self.dots.text = "●" * len(self.pin)

    def submit(self):
        from kiosk.pin import verify_pin

        now = time.monotonic()
        if now < self.locked_until:
            self.message.text = f"Nhập sai quá nhiều lần. Thử lại sau {int(self.locked_until - now) + 1} giây."
            return
        if not self.app.kiosk.config.admin.pin_hash:
            self.message.text = "Chưa đặt mã PIN quản trị trong cấu hình ([admin] pin_hash)."
        elif verify_pin(self.pin, self.app.kiosk.config.admin.pin_hash):
            self.tries = 0
            self.reset()
            self.app.show("admin")
            return
        else:
            self.tries += 1
            if self.tries >= self.MAX_TRIES:
                self.locked_until, self.tries = now + self.LOCK_S, 0
            self.message.text = "Mã PIN không đúng."
        self.pin = ""
        self.dots.text = ""

    def reset(self):
        self.pin = ""
        self.dots.text = ""
        self.message.text = ""


class AdminScreen(KioskScreen):
    title = "Quản trị – mức độ hài lòng"
    VIEWS = [("factor", "Theo tiêu chí"), ("officer", "Theo cán bộ"), ("field", "Theo lĩnh vực"), ("month", "Theo tháng")]

    def build(self):
        u = self.app.u
        self.view = "factor"
        tabs = BoxLayout(size_hint_y=None, height=u * 44, spacing=u * 6)
        self.tab_buttons = {}
        for code, label in self.VIEWS:
            b = tag(KButton(text=label, base=15), f"admin.tab.{code}")
            b.bind(on_release=lambda _b, c=code: self.set_view(c))
            self.tab_buttons[code] = b
            tabs.add_widget(b)
        self.body.add_widget(tabs)
        row = BoxLayout(spacing=u * 10)
        self.chart = tag(Image(fit_mode="contain"), "admin.chart")
        row.add_widget(self.chart)
        side = BoxLayout(orientation="vertical", size_hint_x=None, width=u * 220, spacing=u * 6)
        self.summary = tag(KText(text="", base=15, markup=True), "admin.summary")
        side.add_widget(self.summary)
        self.sync_label = tag(KText(text="", base=13.5, muted=True), "admin.sync")
        side.add_widget(self.sync_label)
        side.add_widget(Widget())
        for text, tid, action in (("Đồng bộ ngay", "admin.sync_now", self.sync_now),
                                  ("Xuất CSV ra USB", "admin.export", self.export_usb),
                                  ("Nhập danh mục từ USB", "admin.import", self.import_usb),
                                  ("Thoát quản trị", "admin.exit", lambda: self.app.go_home())):
            side.add_widget(tag(KButton(text=text, base=15, tone="secondary", size_hint_y=None, height=u * 42,
                                        on_release=lambda _b, a=action: a()), tid))
        row.add_widget(side)
        self.body.add_widget(row)
        self.message = tag(KLabel(text="", base=14, size_hint_y=None, height=u * 24), "admin.message")
        self.body.add_widget(self.message)

    def on_pre_enter(self, *_):
        self.message.text = ""
        self.render()

    def set_view(self, code):
        self.view = code
        self.render()

    def render(self):
        app = self.app
        kiosk = app.kiosk
        target = kiosk.config.satisfaction_target_pct
        for code, b in self.tab_buttons.items():
            b.tone = "chosen" if code == self.view else "secondary"
        shares = kiosk.satisfaction(self.view)
        label = dict(self.VIEWS)[self.view]
        w, h = self.chart.size if self.chart.width > 100 else (app.u * 540, app.u * 300)
        self.chart.source = str(pictures.share_chart(shares, f"Tỷ lệ hài lòng – {label.lower()}", target,
                                                     Path(kiosk.config.data_dir) / "charts",
                                                     size=(max(4.0, w / (100 * app.u)), max(2.5, h / (100 * app.u))),
                                                     dark=app.contrast, scale=app.u))
        (overall,) = kiosk.satisfaction("overall")
        this_month = kiosk.satisfaction("overall", month=datetime.now().strftime("%Y-%m"))[0]
        state = "[color=2e7d32]đạt[/color]" if overall.meets_target else "[color=c62828]chưa đạt[/color]"
        self.summary.text = (f"[b]Tổng thể: {overall.pct:.1f} %[/b] ({overall.answers} phiếu)\n"
                             f"Mục tiêu {target} %: {state}\n"
                             f"Tháng này: {this_month.pct:.1f} % ({this_month.answers} phiếu)")
        self.render_sync()

    def render_sync(self):
        from kiosk.sync import status

        s = status(self.app.kiosk)
        names = {"never": "chưa đồng bộ", "ok": "đã đồng bộ", "offline": "không kết nối được trạm",
                 "unauthorized": "trạm từ chối mã truy cập", "refused": "trạm từ chối dữ liệu"}
        at = datetime.fromtimestamp(s["at"] / 1000).strftime("%H:%M %d/%m") if s.get("at") else "—"
        self.sync_label.text = (f"Đồng bộ: {names.get(s['status'], s['status'])} ({at})\n"
                                f"Chờ gửi: {s['outbox']} phiếu")

    def sync_now(self):
        app = self.app
        if app.sync is None:
            self.message.text = "Chưa cấu hình trạm ([station] url, token_file)."
            return
        report = app.sync.run_once()
        self.message.text = (f"Đã gửi {report['sent']} phiếu." if report.get("ok")
                             else f"Chưa đồng bộ được: {report.get('error', '')[:80]}")
        self.render_sync()

    #: Seam for tests: a USB stick is a mounted filesystem under [admin] usb_path.
    is_mount = staticmethod(os.path.ismount)

    def _usb_dir(self) -> Path | None:
        """The first USB stick mounted under usb_path (/media/LABEL, /media/USER/LABEL),
        or usb_path itself when a stick is mounted right there (usbmount)."""
        root = Path(self.app.kiosk.config.admin.usb_path)
        candidates = [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))]
        return next((c for c in candidates if c.is_dir() and self.is_mount(str(c))), None)

    def export_usb(self):
        from kiosk.ratings import export_csv

        folder = self._usb_dir()
        if folder is None:
            self.message.text = "Không thấy USB. Cắm USB rồi thử lại."
            return
        kiosk = self.app.kiosk
        stamp = datetime.now().strftime("%Y%m%d-%H%M")
        try:
            for kind in ("ratings", "feedback"):
                with kiosk.lock:
                    text = export_csv(kiosk.db, kind)
                (folder / f"{kiosk.config.kiosk_id}-{kind}-{stamp}.csv").write_text(text, encoding="utf-8")
        except OSError as exc:
            self.message.text = f"Không ghi được vào USB: {exc.strerror}"
            return
        self.message.text = f"Đã xuất ra {folder}"

    def import_usb(self):
        folder = self._usb_dir()
        files = sorted((p for p in (folder.rglob("*") if folder else []) if p.suffix.lower() in (".json", ".csv")
                        and "ratings" not in p.name and "feedback" not in p.name), key=lambda p: p.stat().st_mtime)
        if not files:
            self.message.text = "Không thấy tệp danh mục (.json hoặc .csv) trên USB."
            return
        try:
            result = self.app.kiosk.import_catalogue(files[-1])
        except CatalogueError as exc:
            self.message.text = f"Không nhập được {files[-1].name}: {str(exc)[-90:]}"
            return
        self.message.text = f"Đã nhập {files[-1].name}: thêm {result['added']}, cập nhật {result['updated']}."
