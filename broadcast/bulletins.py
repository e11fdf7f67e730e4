"""Bulletins and their approval workflow (Circular 39/2020 levels).

draft → submitted → approved → scheduled → done, or rejected / cancelled. Every change
is written with who, when and why to the append-only audit log in the same transaction,
so a change is never on disk without its audit line. Text is rendered to speech when the
bulletin is submitted (never at play time); the operator sees when the audio came from
the offline fallback.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from devices.errors import ValidationError

from .areas import Actor, Role, audit
from .db import now_ms, transaction
from .media import MediaLibrary, copy_into
from .tts import TextToSpeech

MAX_TITLE = 200
MAX_TEXT = 20_000


class Level(enum.StrEnum):
    NORMAL = "normal"        # thông thường
    PRIORITY = "priority"    # ưu tiên
    EMERGENCY = "emergency"  # khẩn cấp

    @property
    def priority(self) -> int:
        return {"normal": 1, "priority": 2, "emergency": 3}[self.value]


class State(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    DONE = "done"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


STATE_VI = {State.DRAFT: "nháp", State.SUBMITTED: "chờ duyệt", State.APPROVED: "đã duyệt",
            State.SCHEDULED: "đã lên lịch", State.DONE: "đã phát", State.REJECTED: "bị từ chối",
            State.CANCELLED: "đã hủy"}


class WorkflowError(ValidationError):
    """A transition that the workflow or the actor's role does not allow."""


@dataclass(frozen=True)
class Bulletin:
    id: int
    title: str
    level: Level
    text: str | None
    media_sha256: str | None
    audio_sha256: str | None
    audio_fallback: bool
    chime: bool
    author: str
    state: State


def get(db: sqlite_utils.Database, bulletin_id: int) -> Bulletin:
    row = db.execute("SELECT id, title, level, text, media_sha256, audio_sha256, audio_fallback, chime, author, state "
                     "FROM bulletins WHERE id = ?", [bulletin_id]).fetchone()
    if row is None:
        raise ValidationError([f"bản tin: không có bản tin số {bulletin_id}"])
    return Bulletin(row[0], row[1], Level(row[2]), row[3], row[4], row[5], bool(row[6]), bool(row[7]), row[8],
                    State(row[9]))


def _validate(title: str, level: str, text: str | None, media_sha256: str | None) -> Level:
    problems = []
    if not title or not title.strip():
        problems.append("tiêu đề: bắt buộc")
    elif len(title) > MAX_TITLE:
        problems.append(f"tiêu đề: tối đa {MAX_TITLE} ký tự")
    try:
        lvl = Level(level)
    except ValueError:
        problems.append("mức độ: chọn thông thường, ưu tiên hoặc khẩn cấp")
        lvl = Level.NORMAL
    if not (text and text.strip()) and not media_sha256:
        problems.append("nội dung: nhập văn bản hoặc chọn tệp âm thanh")
    if text and len(text) > MAX_TEXT:
        problems.append(f"nội dung: tối đa {MAX_TEXT} ký tự")
    if problems:
        raise ValidationError(problems)
    return lvl


def _set_state(db, actor: Actor, b: Bulletin, new: State, action: str, reason: str | None = None, **extra) -> None:
    db.execute("UPDATE bulletins SET state = ?, updated_at = ? WHERE id = ?", [new.value, now_ms(), b.id])
    audit(db, actor, action, "bulletin", b.id, {"from": b.state.value, "to": new.value, "reason": reason, **extra})


def create(db: sqlite_utils.Database, actor: Actor, title: str, level: str, *, text: str | None = None,
           media_sha256: str | None = None, chime: bool = False) -> int:
    if actor.role is Role.VIEWER:
        raise WorkflowError(["quyền: tài khoản xem không được soạn bản tin"])
    lvl = _validate(title, level, text, media_sha256)
    if media_sha256 and db.execute("SELECT 1 FROM media WHERE sha256 = ?", [media_sha256]).fetchone() is None:
        raise ValidationError(["tệp âm thanh: không có trong thư viện"])
    with transaction(db):
        cur = db.execute("INSERT INTO bulletins (title, level, text, media_sha256, chime, author, state, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, 'draft', ?, ?)",
                         [title.strip(), lvl.value, text, media_sha256, int(chime), actor.username, now_ms(), now_ms()])
        bid = cur.lastrowid
        audit(db, actor, "bulletin.create", "bulletin", bid, {"title": title.strip(), "level": lvl.value})
    return bid


def edit(db: sqlite_utils.Database, actor: Actor, bulletin_id: int, *, title: str | None = None,
         text: str | None = None, level: str | None = None, media_sha256: str | None = None) -> None:
    """Change content; an approved (or submitted) bulletin goes back to draft."""
    b = get(db, bulletin_id)
    if b.state in (State.SCHEDULED, State.DONE, State.CANCELLED):
        raise WorkflowError([f"bản tin: đang ở trạng thái {STATE_VI[b.state]}, không sửa được"])
    new_title, new_text = title if title is not None else b.title, text if text is not None else b.text
    new_media = media_sha256 if media_sha256 is not None else b.media_sha256
    lvl = _validate(new_title, level or b.level.value, new_text, new_media)
    with transaction(db):
        db.execute("UPDATE bulletins SET title=?, text=?, level=?, media_sha256=?, audio_sha256=NULL, audio_fallback=0, "
                   "updated_at=? WHERE id=?", [new_title, new_text, lvl.value, new_media, now_ms(), b.id])
        if b.state is not State.DRAFT:
            _set_state(db, actor, b, State.DRAFT, "bulletin.edit", reason="nội dung đã sửa")
        else:
            audit(db, actor, "bulletin.edit", "bulletin", b.id, None)


def render_audio(db: sqlite_utils.Database, library: MediaLibrary, tts: TextToSpeech, b: Bulletin) -> tuple[str, bool]:
    """The audio a bulletin plays: its uploaded media, or its text spoken (cached),
    after a lead-in chime when the bulletin asks for one."""
    if b.media_sha256 and not b.text:
        sha, fallback = b.media_sha256, False
    else:
        speech = tts.speak(b.text or "")
        sha = copy_into(library, speech.path, "tts-fallback" if speech.fallback else "tts").sha256
        fallback = speech.fallback
    if b.chime:
        sha = with_chime(library, sha)
    return sha, fallback


CHIME_RATE = 22050


def chime_pcm() -> bytes:
    """Three rising notes (C5, E5, G5) announcing a bulletin, as on ward radios."""
    from devices.audio import silence, tone

    notes = [tone(f, 260, CHIME_RATE, 1, amplitude=0.45) + silence(60, CHIME_RATE, 1) for f in (523.25, 659.25, 783.99)]
    return b"".join(notes) + silence(500, CHIME_RATE, 1)


def with_chime(library: MediaLibrary, sha: str) -> str:
    """A new library item: the chime, then the audio ``sha`` (decoded to 22.05 kHz mono)."""
    import tempfile
    import wave

    from devices.audio import decode_file

    body = decode_file(library.path_for(sha), CHIME_RATE, 1)
    with tempfile.TemporaryDirectory() as tmpd:
        out = Path(tmpd) / f"chime-{sha[:12]}.wav"
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(CHIME_RATE)
            w.writeframes(chime_pcm() + body)
        return library.import_file(out, source="chime").sha256


def submit(db: sqlite_utils.Database, library: MediaLibrary, tts: TextToSpeech, actor: Actor,
           bulletin_id: int) -> Bulletin:
    """Render the audio now (never at play time), then ask for approval."""
    b = get(db, bulletin_id)
    if b.state not in (State.DRAFT, State.REJECTED):
        raise WorkflowError([f"bản tin: đang {STATE_VI[b.state]}, không gửi duyệt được"])
    sha, fallback = render_audio(db, library, tts, b)
    with transaction(db):
        db.execute("UPDATE bulletins SET audio_sha256 = ?, audio_fallback = ? WHERE id = ?", [sha, int(fallback), b.id])
        _set_state(db, actor, b, State.SUBMITTED, "bulletin.submit", audio=sha, fallback=fallback)
    return get(db, bulletin_id)


def approve(db: sqlite_utils.Database, actor: Actor, bulletin_id: int, reason: str | None = None) -> Bulletin:
    """Only an approver (or admin) approves; the approval is on disk when this returns."""
    if actor.role not in (Role.APPROVER, Role.ADMIN):
        raise WorkflowError(["quyền: chỉ người duyệt mới được duyệt bản tin"])
    b = get(db, bulletin_id)
    if b.state is not State.SUBMITTED:
        raise WorkflowError([f"bản tin: đang {STATE_VI[b.state]}, chỉ duyệt được bản tin chờ duyệt"])
    with transaction(db):
        _set_state(db, actor, b, State.APPROVED, "bulletin.approve", reason)
    return get(db, bulletin_id)


def reject(db: sqlite_utils.Database, actor: Actor, bulletin_id: int, reason: str) -> Bulletin:
    if actor.role not in (Role.APPROVER, Role.ADMIN):
        raise WorkflowError(["quyền: chỉ người duyệt mới được từ chối bản tin"])
    if not reason or not reason.strip():
        raise ValidationError(["lý do: hãy ghi lý do từ chối để người soạn sửa lại"])
    b = get(db, bulletin_id)
    if b.state is not State.SUBMITTED:
        raise WorkflowError([f"bản tin: đang {STATE_VI[b.state]}, không từ chối được"])
    with transaction(db):
        _set_state(db, actor, b, State.REJECTED, "bulletin.reject", reason.strip())
    return get(db, bulletin_id)


def cancel(db: sqlite_utils.Database, actor: Actor, bulletin_id: int, reason: str) -> Bulletin:
    if actor.role is Role.VIEWER:
        raise WorkflowError(["quyền: tài khoản xem không được hủy bản tin"])
    if not reason or not reason.strip():
        raise ValidationError(["lý do: hãy ghi lý do hủy"])
    b = get(db, bulletin_id)
    if b.state in (State.DONE, State.CANCELLED):
        raise WorkflowError([f"bản tin: đã {STATE_VI[b.state]}"])
    with transaction(db):
        db.execute("UPDATE occurrences SET cancelled = 1 WHERE bulletin_id = ? AND start_at > ?", [b.id, now_ms()])
        db.execute("UPDATE schedules SET active = 0 WHERE bulletin_id = ?", [b.id])
        _set_state(db, actor, b, State.CANCELLED, "bulletin.cancel", reason.strip())
    return get(db, bulletin_id)


def mark_scheduled(db: sqlite_utils.Database, actor: Actor, b: Bulletin) -> None:
    if b.state is State.APPROVED:
        _set_state(db, actor, b, State.SCHEDULED, "bulletin.schedule")


def approve_emergency_now(db, library, tts, actor: Actor, bulletin_id: int, reason: str,
                          allow_operator: bool) -> Bulletin:
    """Emergency: submitted and approved in one step by an approver (or an operator when
    the config allows it) — still rendered first and fully audited with the reason."""
    if not reason or not reason.strip():
        raise ValidationError(["lý do: phát khẩn cấp cần ghi lý do"])
    allowed = actor.role in (Role.APPROVER, Role.ADMIN) or (allow_operator and actor.role is Role.OPERATOR)
    if not allowed:
        raise WorkflowError(["quyền: chỉ người duyệt được phát khẩn cấp ngay"])
    b = get(db, bulletin_id)
    if b.level is not Level.EMERGENCY:
        raise WorkflowError(["mức độ: chỉ bản tin khẩn cấp được phát ngay"])
    if b.state in (State.DRAFT, State.REJECTED):
        b = submit(db, library, tts, actor, bulletin_id)
    if b.state is State.SUBMITTED:
        with transaction(db):
            _set_state(db, actor, b, State.APPROVED, "bulletin.emergency_approve", reason.strip())
    return get(db, bulletin_id)
