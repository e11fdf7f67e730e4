"""What the counter kiosks send to the station and fetch from it (docs/kiosk-api.md).

- Tokens: one bearer token per kiosk id; only its SHA-256 is stored.
- Submissions: ratings (SIPAS) and feedback, validated item by item, stored in one
  transaction and idempotent by uuid (a kiosk that lost the answer sends the batch again).
- Catalogue: the ward's procedure catalogue, imported on the station and served with a
  version (sha256) the kiosk uses as ETag.
- Announcements: approved, non-emergency bulletins of the last 14 days.
- Satisfaction: share of answers at level 4–5 per SIPAS factor, officer, field and month
  against the 85 % target.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import uuid as uuidlib
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils

from devices.errors import ValidationError
from devices.protocol import ID_PATTERN

from kiosk.ratings import DEFAULT_TARGET_PCT, FEEDBACK_CATEGORIES, PHONE_RE, Share
from kiosk.ratings import FACTORS as FACTOR_LABELS

from .areas import Actor, audit
from .db import now_ms, transaction

MAX_ITEMS = 500
MAX_BODY_BYTES = 1024 * 1024
MAX_CATALOGUE_BYTES = 20 * 1024 * 1024
ANNOUNCEMENT_DAYS = 14
TARGET_PCT = DEFAULT_TARGET_PCT
FACTORS = tuple(FACTOR_LABELS)  # SIPAS factors, defined once with the kiosk that asks them
COUNTER_RE = re.compile(r"[a-z0-9-]{1,64}")
# a kiosk without a real-time clock may answer before NTP set its clock (1970) or with a
# clock far ahead: such items are still stored (never parked at the kiosk forever), and
# reports place them at the time the station received them
MIN_CREATED_MS = 1_577_836_800_000
MAX_MS = 2 ** 53
WHEN_SQL = (f"(CASE WHEN created_ms BETWEEN {MIN_CREATED_MS} AND received_at + 86400000 "
            "THEN created_ms ELSE received_at END)")


class ItemError(ValidationError):
    """One field of one item is wrong; the whole batch is refused (HTTP 422)."""

    def __init__(self, field: str, message: str, message_vi: str):
        super().__init__([f"{field}: {message_vi}"])
        self.field, self.message, self.message_vi = field, message, message_vi

    def body(self) -> dict:
        return {"error": "invalid", "field": self.field, "message": self.message, "message_vi": self.message_vi}


# --- tokens ------------------------------------------------------------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(db: sqlite_utils.Database, actor: Actor | str, kind: str, subject: str, label: str | None = None) -> str:
    """Issue a new token for a kiosk id (kind ``kiosk``) or a user (kind ``user``);
    earlier tokens of that subject stay valid until revoked. Returns the token once."""
    if kind == "kiosk" and not ID_PATTERN.fullmatch(subject or ""):
        raise ValidationError(["mã kiosk: chữ thường không dấu, số và '-', 1-64 ký tự (ví dụ: kiosk-01)"])
    if kind == "user" and db.execute("SELECT 1 FROM users WHERE username = ?", [subject]).fetchone() is None:
        raise ValidationError([f"người dùng: không có tài khoản {subject!r}"])
    token = secrets.token_urlsafe(32)
    with transaction(db):
        db.execute("INSERT INTO api_tokens (token_sha256, kind, subject, label, created_at) VALUES (?, ?, ?, ?, ?)",
                   [_token_hash(token), kind, subject, (label or "")[:100] or None, now_ms()])
        audit(db, actor, "token.add", kind, subject, {"label": label})
    return token


def revoke_tokens(db: sqlite_utils.Database, actor: Actor | str, kind: str, subject: str) -> int:
    with transaction(db):
        n = db.execute("UPDATE api_tokens SET revoked_at = ? WHERE kind = ? AND subject = ? AND revoked_at IS NULL",
                       [now_ms(), kind, subject]).rowcount
        audit(db, actor, "token.revoke", kind, subject, {"revoked": n})
    return n


def token_subject(db: sqlite_utils.Database, token: str) -> tuple[str, str] | None:
    """(kind, subject) of a valid token, or None."""
    if not token or len(token) > 200:
        return None
    row = db.execute("SELECT kind, subject FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
                     [_token_hash(token)]).fetchone()
    return (row[0], row[1]) if row else None


# --- submissions -------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_text(item: dict, key: str, where: str, limit: int) -> str | None:
    v = item.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > limit:
        raise ItemError(f"{where}.{key}", f"{key} must be a string of at most {limit} characters",
                        f"Trường {key} phải là chuỗi tối đa {limit} ký tự")
    return v


def _check_unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ItemError(field, "text is not valid Unicode", "Văn bản chứa ký tự không hợp lệ") from None


def validate_item(item, i: int) -> dict:
    """A normalised item, or ItemError naming ``items[i].field``."""
    where = f"items[{i}]"
    if not isinstance(item, dict):
        raise ItemError(where, "each item must be an object", "Mỗi mục phải là một đối tượng JSON")
    raw_uuid = item.get("uuid")
    try:
        if not isinstance(raw_uuid, str) or len(raw_uuid) != 36:
            raise ValueError
        u = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise ItemError(f"{where}.uuid", "uuid must be an RFC 4122 UUID",
                        "Mã uuid phải là UUID theo RFC 4122") from None
    kind = item.get("kind")
    if kind not in ("rating", "feedback"):
        raise ItemError(f"{where}.kind", "kind must be rating or feedback",
                        "Loại mục phải là rating (đánh giá) hoặc feedback (góp ý)")
    created = item.get("created_ms")
    if not _is_int(created) or not 0 <= created <= MAX_MS:
        raise ItemError(f"{where}.created_ms", "created_ms must be Unix milliseconds (an integer ≥ 0)",
                        "Thời điểm created_ms phải là số mili giây Unix (số nguyên không âm)")
    counter = item.get("counter_id")
    if not isinstance(counter, str) or not COUNTER_RE.fullmatch(counter):
        raise ItemError(f"{where}.counter_id", "counter_id must match [a-z0-9-]{1,64}",
                        "Mã quầy chỉ gồm chữ thường không dấu, số và '-', 1-64 ký tự")
    out = {"uuid": u, "kind": kind, "created_ms": created, "counter_id": counter}
    if kind == "rating":
        level = item.get("level")
        if not _is_int(level) or not 1 <= level <= 5:
            raise ItemError(f"{where}.level", "level must be 1…5", "Mức đánh giá phải từ 1 đến 5")
        source = item.get("source")
        if source not in ("button", "screen"):
            raise ItemError(f"{where}.source", "source must be button or screen",
                            "Nguồn đánh giá phải là button (nút bấm) hoặc screen (màn hình)")
        factors = item.get("factors") or {}
        if not isinstance(factors, dict):
            raise ItemError(f"{where}.factors", "factors must be an object", "Các tiêu chí phải là một đối tượng JSON")
        for name, score in factors.items():
            if name not in FACTORS:
                raise ItemError(f"{where}.factors.{str(name)[:40]}", f"unknown factor; factors are {', '.join(FACTORS)}",
                                "Tiêu chí không có trong mô hình SIPAS (access, procedures, officers, results, feedback)")
            if not _is_int(score) or not 1 <= score <= 5:
                raise ItemError(f"{where}.factors.{name}", "a factor score must be 1…5",
                                "Điểm mỗi tiêu chí phải từ 1 đến 5")
        reasons = item.get("reasons") or []
        if not isinstance(reasons, list) or len(reasons) > 10 or not all(
                isinstance(r, str) and 0 < len(r) <= 64 for r in reasons):
            raise ItemError(f"{where}.reasons", "reasons must be a list of at most 10 codes of at most 64 characters",
                            "Lý do: tối đa 10 mã, mỗi mã tối đa 64 ký tự")
        out.update(level=level, source=source, factors=factors, reasons=reasons,
                   officer_id=_opt_text(item, "officer_id", where, 64),
                   procedure_code=_opt_text(item, "procedure_code", where, 32),
                   field=_opt_text(item, "field", where, 200),
                   comment=_opt_text(item, "comment", where, 2000))
        for key in ("officer_id", "procedure_code", "field", "comment"):
            if out[key] is not None:
                _check_unicode(out[key], f"{where}.{key}")
        for r in reasons:
            _check_unicode(r, f"{where}.reasons")
    else:
        category = item.get("category")
        if category not in FEEDBACK_CATEGORIES:
            raise ItemError(f"{where}.category", "category must be gop_y or phan_anh",
                            "Loại góp ý phải là gop_y (góp ý) hoặc phan_anh (phản ánh)")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > 4000:
            raise ItemError(f"{where}.text", "text must be 1…4000 characters", "Nội dung góp ý phải từ 1 đến 4.000 ký tự")
        _check_unicode(text, f"{where}.text")
        phone = item.get("phone")
        if phone is not None and (not isinstance(phone, str) or not PHONE_RE.fullmatch(phone)):
            raise ItemError(f"{where}.phone", "phone must be 6…20 of digits, spaces and + ( ) . -",
                            "Số điện thoại gồm 6-20 chữ số (có thể có dấu cách, + ( ) . -)")
        name = _opt_text(item, "name", where, 200)
        if name is not None:
            _check_unicode(name, f"{where}.name")
        out.update(category=category, text=text, phone=phone, name=name)
    return out


def validate_batch(body, token_kiosk: str) -> list[dict]:
    """The normalised items of a request body; ItemError (422) or PermissionError (403)."""
    if not isinstance(body, dict):
        raise ItemError("body", "the body must be a JSON object with kiosk_id and items",
                        "Nội dung gửi phải là đối tượng JSON có kiosk_id và items")
    kiosk_id = body.get("kiosk_id")
    if not isinstance(kiosk_id, str) or not ID_PATTERN.fullmatch(kiosk_id):
        raise ItemError("kiosk_id", "kiosk_id must be a kiosk id", "Mã kiosk không hợp lệ")
    if kiosk_id != token_kiosk:
        raise PermissionError(kiosk_id)
    items = body.get("items")
    if not isinstance(items, list):
        raise ItemError("items", "items must be a list", "items phải là một danh sách")
    if len(items) > MAX_ITEMS:
        raise BatchTooLarge()
    return [validate_item(item, i) for i, item in enumerate(items)]


class BatchTooLarge(ValidationError):
    def __init__(self):
        super().__init__([f"quá {MAX_ITEMS} mục hoặc quá 1 MiB trong một lần gửi"])


def store_batch(db: sqlite_utils.Database, kiosk_id: str, items: list[dict]) -> dict[str, list[str]]:
    """Store every new item in one transaction; returns accepted and duplicate uuids."""
    accepted, duplicates = [], []
    now = now_ms()
    with transaction(db):
        for it in items:
            if it["kind"] == "rating":
                f = it["factors"]
                cur = db.execute(
                    "INSERT OR IGNORE INTO kiosk_ratings (uuid, kiosk_id, created_ms, counter_id, level, source, "
                    "officer_id, procedure_code, field, f_access, f_procedures, f_officers, f_results, f_feedback, "
                    "reasons, comment, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [it["uuid"], kiosk_id, it["created_ms"], it["counter_id"], it["level"], it["source"],
                     it["officer_id"], it["procedure_code"], it["field"], *(f.get(k) for k in FACTORS),
                     json.dumps(it["reasons"], ensure_ascii=False) if it["reasons"] else None, it["comment"], now])
            else:
                cur = db.execute(
                    "INSERT OR IGNORE INTO kiosk_feedback (uuid, kiosk_id, created_ms, counter_id, category, text, "
                    "phone, name, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    [it["uuid"], kiosk_id, it["created_ms"], it["counter_id"], it["category"], it["text"],
                     it["phone"], it["name"], now])
            if cur.rowcount and not _held_as_other_kind(db, it):
                accepted.append(it["uuid"])
            else:
                duplicates.append(it["uuid"])
    return {"accepted": accepted, "duplicates": duplicates}


def _held_as_other_kind(db, it: dict) -> bool:
    """A uuid is unique across both kinds: a rating never shadows a feedback."""
    other = "kiosk_feedback" if it["kind"] == "rating" else "kiosk_ratings"
    if db.execute(f"SELECT 1 FROM {other} WHERE uuid = ?", [it["uuid"]]).fetchone() is None:
        return False
    own = "kiosk_ratings" if it["kind"] == "rating" else "kiosk_feedback"
    db.execute(f"DELETE FROM {own} WHERE uuid = ?", [it["uuid"]])
    return True


# --- catalogue ---------------------------------------------------------------------------

def import_catalogue(db: sqlite_utils.Database, actor: Actor | str, path: Path) -> dict:
    """Store the ward's procedure catalogue (the kiosk's JSON import format) for kiosks."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CATALOGUE_BYTES:
            raise ValidationError([f"danh mục: tệp lớn hơn {MAX_CATALOGUE_BYTES // 1_048_576} MB"])
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ValidationError([f"danh mục: không đọc được {path.name} ({exc.strerror})"]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError([f"danh mục: không phải JSON hợp lệ ({exc})"]) from None
    procedures = doc.get("procedures") if isinstance(doc, dict) else doc
    if not isinstance(procedures, list) or not procedures:
        raise ValidationError(["danh mục: cần một danh sách thủ tục, hoặc đối tượng có khóa 'procedures'"])
    for i, rec in enumerate(procedures, 1):
        if not isinstance(rec, dict) or not (rec.get("ma_tthc") or rec.get("code")):
            raise ValidationError([f"danh mục: thủ tục thứ {i} phải là đối tượng có ma_tthc"])
    body = json.dumps(procedures, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(body.encode("utf-8")).hexdigest()
    with transaction(db):
        db.execute("INSERT INTO kiosk_catalogue (id, version, body, procedures, updated_at) VALUES (1, ?, ?, ?, ?) "
                   "ON CONFLICT(id) DO UPDATE SET version=excluded.version, body=excluded.body, "
                   "procedures=excluded.procedures, updated_at=excluded.updated_at",
                   [version, body, len(procedures), now_ms()])
        audit(db, actor, "catalogue.import", "catalogue", version[:16], {"procedures": len(procedures),
                                                                          "file": path.name})
    return {"version": version, "procedures": len(procedures)}


def catalogue(db: sqlite_utils.Database) -> tuple[str, str] | None:
    """(version, JSON response body) or None when no catalogue was imported."""
    row = db.execute("SELECT version, body FROM kiosk_catalogue WHERE id = 1").fetchone()
    if row is None:
        return None
    return row[0], '{"version":' + json.dumps(row[0]) + ',"procedures":' + row[1] + "}"


def announcements(db: sqlite_utils.Database, days: int = ANNOUNCEMENT_DAYS) -> list[dict]:
    since = now_ms() - days * 86_400_000
    return [{"id": r[0], "title": r[1], "text": r[2] or "", "level": r[3], "created_ms": r[4]} for r in db.execute(
        "SELECT id, title, text, level, created_at FROM bulletins WHERE level != 'emergency' AND "
        "state IN ('approved', 'scheduled', 'done') AND created_at >= ? ORDER BY created_at DESC LIMIT 100",
        [since])]


# --- satisfaction (counted with the kiosk's Share: one definition of the SIPAS index) ------


def satisfaction(db: sqlite_utils.Database, start_ms: int, end_ms: int, tz: str) -> dict:
    """Share of answers at level 4–5, overall and per factor, officer, field and month."""
    where, args = f"{WHEN_SQL} >= ? AND {WHEN_SQL} < ?", [start_ms, end_ms]
    total, sat = db.execute(f"SELECT COUNT(*), SUM(level >= 4) FROM kiosk_ratings WHERE {where}", args).fetchone()
    factors = []
    for f in FACTORS:
        n, s = db.execute(f"SELECT COUNT(f_{f}), SUM(f_{f} >= 4) FROM kiosk_ratings WHERE {where}", args).fetchone()
        factors.append(Share(f, FACTOR_LABELS[f], n or 0, s or 0))

    def by(column: str, empty: str) -> list[Share]:
        return [Share(k or "", k or empty, n, s or 0) for k, n, s in db.execute(
            f"SELECT {column}, COUNT(*), SUM(level >= 4) FROM kiosk_ratings WHERE {where} GROUP BY {column} "
            f"ORDER BY {column}", args)]

    zone = ZoneInfo(tz)
    months: dict[str, list[int]] = {}
    for created, level in db.execute(f"SELECT {WHEN_SQL}, level FROM kiosk_ratings WHERE {where}", args):
        key = dt.datetime.fromtimestamp(created / 1000, zone).strftime("%Y-%m")
        m = months.setdefault(key, [0, 0])
        m[0] += 1
        m[1] += level >= 4
    return {"target_pct": TARGET_PCT, "overall": Share("all", "Tất cả", total or 0, sat or 0),
            "factors": factors, "officers": by("officer_id", "(không ghi cán bộ)"),
            "fields": by("field", "(không ghi lĩnh vực)"),
            "months": [Share(k, f"{k[5:]}/{k[:4]}", v[0], v[1]) for k, v in sorted(months.items())],
            "feedback": db.execute(f"SELECT COUNT(*) FROM kiosk_feedback WHERE {where}", args).fetchone()[0]}


def recent_feedback(db: sqlite_utils.Database, start_ms: int, end_ms: int, limit: int = 50) -> list[dict]:
    return [dict(created_ms=r[0], kiosk_id=r[1], counter_id=r[2], category=r[3], text=r[4], phone=r[5], name=r[6])
            for r in db.execute(f"SELECT {WHEN_SQL}, kiosk_id, counter_id, category, text, phone, name FROM kiosk_feedback "
                                f"WHERE {WHEN_SQL} >= ? AND {WHEN_SQL} < ? ORDER BY 1 DESC LIMIT ?",
                                [start_ms, end_ms, limit])]
