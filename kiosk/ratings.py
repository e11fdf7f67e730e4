"""Satisfaction ratings and feedback: validated, durable, then counted.

A rating is on disk (synchronous=FULL, committed) when ``record_rating`` returns; only
then may the screen say "Cảm ơn". The same rows form the outbox (``synced_at IS NULL``).
A screen rating may be completed by an optional follow-up (officer, procedure, SIPAS
factors, reasons, comment); while the follow-up is open the row is held back from sync
(``open_until``), so the station receives it once, complete.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from devices.errors import ThanthienError
from devices.sqlite import now_ms, transaction

#: How long a follow-up may hold a rating back from sync (a crashed screen releases it).
FOLLOW_UP_HOLD_MS = 10 * 60 * 1000


class Level(enum.IntEnum):
    """The 5-level SIPAS scale."""
    VERY_DISSATISFIED = 1
    DISSATISFIED = 2
    NEUTRAL = 3
    SATISFIED = 4
    VERY_SATISFIED = 5

    @property
    def label(self) -> str:
        return LEVEL_LABELS[self]


LEVEL_LABELS = {
    Level.VERY_DISSATISFIED: "Rất không hài lòng",
    Level.DISSATISFIED: "Không hài lòng",
    Level.NEUTRAL: "Bình thường",
    Level.SATISFIED: "Hài lòng",
    Level.VERY_SATISFIED: "Rất hài lòng",
}

#: SIPAS factors (Quyết định 3279/QĐ-BNV): code → label on screen and in reports.
FACTORS = {
    "access": "Tiếp cận dịch vụ",
    "procedures": "Thủ tục hành chính",
    "officers": "Công chức giải quyết",
    "results": "Kết quả giải quyết",
    "feedback": "Tiếp nhận, xử lý góp ý, phản ánh",
}

#: Reason chips offered after a low rating.
REASONS = {
    "cho_lau": "Phải chờ lâu",
    "di_lai_nhieu": "Phải đi lại nhiều lần",
    "huong_dan_kho_hieu": "Hướng dẫn khó hiểu",
    "thai_do": "Thái độ chưa đúng mực",
    "tre_hen": "Trả kết quả trễ hẹn",
    "ho_so_phuc_tap": "Hồ sơ, giấy tờ phức tạp",
    "phi_cao": "Chi phí chưa hợp lý",
    "co_so_vat_chat": "Cơ sở vật chất chưa tốt",
}

FEEDBACK_CATEGORIES = {"gop_y": "Góp ý", "phan_anh": "Phản ánh"}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_CODE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
PHONE_RE = re.compile(r"[0-9 +().-]{6,20}")  # fullmatch; the station checks uploads with it too


class InputError(ThanthienError, ValueError):
    """A rating or feedback field that cannot be stored; ``message_vi`` is for the screen."""

    def __init__(self, field: str, message: str, message_vi: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.message_vi = field, message, message_vi


class Source(enum.StrEnum):
    BUTTON = "button"
    SCREEN = "screen"


@dataclass(frozen=True)
class Origin:
    """Where answers come from: which kiosk and which counter."""
    kiosk_id: str
    counter_id: str


def _text(value, field: str, limit: int, vi_name: str, *, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InputError(field, "is required", f"Vui lòng nhập {vi_name}.")
        return None
    if not isinstance(value, str):
        raise InputError(field, "must be text", f"{vi_name.capitalize()} không hợp lệ.")
    value = value.strip()
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InputError(field, "contains characters that cannot be stored", f"{vi_name.capitalize()} có ký tự không hợp lệ.")
    if len(value) > limit:
        raise InputError(field, f"is longer than {limit} characters",
                         f"{vi_name.capitalize()} quá dài (tối đa {limit} ký tự).")
    return value


def _level(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise InputError(field, "must be 1…5", "Mức đánh giá phải từ 1 đến 5.")
    return int(value)


def validate_rating_details(*, officer_id=None, procedure_code=None, field_name=None, factors=None,
                            reasons=None, comment=None) -> dict:
    if officer_id is not None and (not isinstance(officer_id, str) or not _ID.match(officer_id)):
        raise InputError("officer_id", "must be an officer id from the config", "Cán bộ không hợp lệ.")
    if procedure_code is not None and (not isinstance(procedure_code, str) or not _CODE.match(procedure_code)):
        raise InputError("procedure_code", "must be a procedure code", "Mã thủ tục không hợp lệ.")
    factors = factors or {}
    if not isinstance(factors, dict):
        raise InputError("factors", "must map factor → 1…5", "Đánh giá theo tiêu chí không hợp lệ.")
    for k, v in factors.items():
        if k not in FACTORS:
            raise InputError(f"factors.{k}", f"unknown factor; use one of {', '.join(FACTORS)}", "Tiêu chí không hợp lệ.")
        _level(v, f"factors.{k}")
    reasons = list(reasons or [])
    if len(reasons) > 10 or any(r not in REASONS for r in reasons):
        raise InputError("reasons", f"must be up to 10 of {', '.join(REASONS)}", "Lý do không hợp lệ.")
    return {
        "officer_id": officer_id,
        "procedure_code": procedure_code,
        "field": _text(field_name, "field", 200, "lĩnh vực"),
        "factors": json.dumps(factors, sort_keys=True),
        "reasons": json.dumps(reasons),
        "comment": _text(comment, "comment", 2000, "ý kiến"),
    }


def record_rating(db: sqlite_utils.Database, origin: Origin, level: int, source: Source | str, *,
                  follow_up: bool = False, created_ms: int | None = None, **details) -> str:
    """Store one rating durably; returns its uuid. ``follow_up`` holds it back from sync
    until ``finish_rating`` (or FOLLOW_UP_HOLD_MS)."""
    level = _level(level, "level")
    source = Source(source)
    row = validate_rating_details(**details)
    created = created_ms or now_ms()
    uid = str(uuidlib.uuid4())
    with transaction(db):
        db.execute(
            "INSERT INTO ratings (uuid, created_ms, kiosk_id, counter_id, level, source, officer_id, procedure_code,"
            " field, factors, reasons, comment, open_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [uid, created, origin.kiosk_id, origin.counter_id, level, source.value, row["officer_id"],
             row["procedure_code"], row["field"], row["factors"], row["reasons"], row["comment"],
             created + FOLLOW_UP_HOLD_MS if follow_up else 0])
    return uid


def finish_rating(db: sqlite_utils.Database, uid: str, **details) -> None:
    """Add the follow-up answers to a held rating and release it to the outbox."""
    row = validate_rating_details(**details)
    with transaction(db):
        cur = db.execute(
            "UPDATE ratings SET officer_id=coalesce(?, officer_id), procedure_code=coalesce(?, procedure_code),"
            " field=coalesce(?, field), factors=?, reasons=?, comment=?, open_until=0"
            " WHERE uuid=? AND synced_at IS NULL",
            [row["officer_id"], row["procedure_code"], row["field"], row["factors"], row["reasons"], row["comment"], uid])
        if cur.rowcount != 1:
            raise InputError("uuid", "unknown or already sent rating", "Không tìm thấy phiếu đánh giá.")


def release_rating(db: sqlite_utils.Database, uid: str) -> None:
    """The citizen left the follow-up: keep the level, send it as it is."""
    with transaction(db):
        db.execute("UPDATE ratings SET open_until=0 WHERE uuid=?", [uid])


def record_feedback(db: sqlite_utils.Database, origin: Origin, category: str, text, *, phone=None, name=None) -> str:
    if category not in FEEDBACK_CATEGORIES:
        raise InputError("category", "must be gop_y or phan_anh", "Vui lòng chọn Góp ý hoặc Phản ánh.")
    text = _text(text, "text", 4000, "nội dung", required=True)
    phone = _text(phone, "phone", 20, "số điện thoại")
    if phone and not PHONE_RE.fullmatch(phone):
        raise InputError("phone", "must be 6–20 digits", "Số điện thoại chỉ gồm chữ số (6–20 ký tự).")
    name = _text(name, "name", 200, "họ tên")
    uid = str(uuidlib.uuid4())
    with transaction(db):
        db.execute("INSERT INTO feedback (uuid, created_ms, kiosk_id, counter_id, category, text, phone, name)"
                   " VALUES (?,?,?,?,?,?,?,?)", [uid, now_ms(), origin.kiosk_id, origin.counter_id, category, text, phone, name])
    return uid


# -- the outbox ------------------------------------------------------------------------

def pending_items(db: sqlite_utils.Database, limit: int = 500, now: int | None = None) -> list[dict]:
    """Unsent ratings and feedback in the upload format of docs/kiosk-api.md."""
    now = now or now_ms()
    items = []
    for r in db.execute("SELECT uuid, created_ms, counter_id, level, source, officer_id, procedure_code, field,"
                        " factors, reasons, comment FROM ratings WHERE synced_at IS NULL AND open_until <= ?"
                        " ORDER BY created_ms LIMIT ?", [now, limit]).fetchall():
        items.append({"uuid": r[0], "kind": "rating", "created_ms": r[1], "counter_id": r[2], "level": r[3],
                      "source": r[4], "officer_id": r[5], "procedure_code": r[6], "field": r[7],
                      "factors": json.loads(r[8]), "reasons": json.loads(r[9]), "comment": r[10]})
    for r in db.execute("SELECT uuid, created_ms, counter_id, category, text, phone, name FROM feedback"
                        " WHERE synced_at IS NULL ORDER BY created_ms LIMIT ?", [max(0, limit - len(items))]).fetchall():
        items.append({"uuid": r[0], "kind": "feedback", "created_ms": r[1], "counter_id": r[2], "category": r[3],
                      "text": r[4], "phone": r[5], "name": r[6]})
    return items


def mark_synced(db: sqlite_utils.Database, uuids: list[str]) -> int:
    now = now_ms()
    n = 0
    with transaction(db):
        for chunk in range(0, len(uuids), 500):
            part = uuids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for table in ("ratings", "feedback"):
                n += db.execute(f"UPDATE {table} SET synced_at=? WHERE synced_at IS NULL AND uuid IN ({marks})",
                                [now, *part]).rowcount
    return n


def outbox_size(db: sqlite_utils.Database) -> int:
    return sum(db.execute(f"SELECT count(*) FROM {t} WHERE synced_at IS NULL").fetchone()[0]
               for t in ("ratings", "feedback"))


# -- satisfaction ----------------------------------------------------------------------

DEFAULT_TARGET_PCT = 85.0


@dataclass(frozen=True)
class Share:
    """Share of 4–5 answers in a group, the SIPAS satisfaction index; the kiosk's admin
    screen and the station's reports both count with it."""
    key: str
    label: str
    answers: int
    satisfied: int
    target_pct: float = DEFAULT_TARGET_PCT

    @property
    def pct(self) -> float:
        return round(100.0 * self.satisfied / self.answers, 1) if self.answers else 0.0

    @property
    def meets_target(self) -> bool:
        return self.answers > 0 and self.pct >= self.target_pct

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "answers": self.answers, "satisfied": self.satisfied,
                "pct": self.pct, "meets_target": self.meets_target}


def _month_bounds(month: str | None) -> tuple[int, int]:
    if not month:
        return 0, 2**62
    try:
        start = datetime.strptime(month, "%Y-%m")
    except ValueError:
        raise InputError("month", "must be YYYY-MM", "Tháng phải có dạng NNNN-TT.") from None
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def satisfaction(db: sqlite_utils.Database, by: str, *, month: str | None = None,
                 labels: dict[str, str] | None = None, target_pct: float = DEFAULT_TARGET_PCT) -> list[Share]:
    """Satisfaction per ``overall``, ``level``, ``factor``, ``officer``, ``field`` or ``month``."""
    lo, hi = _month_bounds(month)
    where = "created_ms >= ? AND created_ms < ?"
    if by == "overall":
        n, s = db.execute(f"SELECT count(*), sum(level >= 4) FROM ratings WHERE {where}", [lo, hi]).fetchone()
        return [Share("overall", "Tổng thể", n, s or 0, target_pct)]
    if by == "factor":
        out = []
        for code, label in FACTORS.items():
            n, s = db.execute(f"SELECT count(*), sum(CAST(json_extract(factors, '$.{code}') AS INTEGER) >= 4) FROM ratings"
                              f" WHERE {where} AND json_extract(factors, '$.{code}') IS NOT NULL", [lo, hi]).fetchone()
            out.append(Share(code, label, n, s or 0, target_pct))
        return out
    column = {"officer": "coalesce(officer_id, '')", "field": "coalesce(field, '')",
              "month": "strftime('%Y-%m', created_ms / 1000, 'unixepoch', 'localtime')"}.get(by)
    if column is None:
        raise InputError("by", "must be overall, factor, officer, field or month", "Cách nhóm không hợp lệ.")
    rows = db.execute(f"SELECT {column} AS k, count(*), sum(level >= 4) FROM ratings WHERE {where}"
                      f" GROUP BY k ORDER BY k", [lo, hi]).fetchall()
    labels = labels or {}
    empty = {"officer": "(không ghi cán bộ)", "field": "(không ghi lĩnh vực)"}.get(by, "(không ghi)")
    return [Share(k, labels.get(k, k) or empty, n, s or 0, target_pct) for k, n, s in rows]


def level_counts(db: sqlite_utils.Database, month: str | None = None) -> dict[int, int]:
    lo, hi = _month_bounds(month)
    counts = {level: 0 for level in range(1, 6)}
    for level, n in db.execute("SELECT level, count(*) FROM ratings WHERE created_ms >= ? AND created_ms < ?"
                               " GROUP BY level", [lo, hi]).fetchall():
        counts[level] = n
    return counts


def export_csv(db: sqlite_utils.Database, kind: str = "ratings") -> str:
    """All ratings (or feedback) as CSV for the ward's records (UTF-8 with BOM for Excel)."""
    if kind not in ("ratings", "feedback"):
        raise InputError("kind", "must be ratings or feedback", "Loại dữ liệu không hợp lệ.")
    cur = db.execute(f"SELECT * FROM {kind} ORDER BY created_ms")
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([d[0] for d in cur.description])
    writer.writerows(cur.fetchall())
    return out.getvalue()
