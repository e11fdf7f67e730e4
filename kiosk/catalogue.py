"""The procedure catalogue (thủ tục hành chính): parse, clean and store.

Wards get their catalogue as JSON exported from the national procedures database or as
a spreadsheet saved as CSV. Both are parsed into one ``Procedure`` shape. Text from the
national database carries HTML markup and entities; it is turned into clean paragraphs
and list items here so no screen ever shows a raw tag. An import is all or nothing:
the first bad record refuses the whole file with the record and field named.
"""

from __future__ import annotations

import csv
import html
import html.parser
import io
import json
import re
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from devices.errors import ThanthienError
from devices.sqlite import now_ms, transaction

from .search import normalize

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_RECORDS = 20_000
MAX_TEXT = 20_000
CODE_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")


class CatalogueError(ThanthienError, ValueError):
    """A catalogue file that cannot be imported; ``record`` and ``field`` say where."""

    def __init__(self, message: str, *, record: int | None = None, field: str | None = None,
                 source: str | None = None):
        where = []
        if source:
            where.append(str(source))
        if record is not None:
            where.append(f"record {record}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")
        self.record, self.field, self.source = record, field, source


@dataclass
class Document:
    name: str
    originals: int = 0
    copies: int = 0


@dataclass
class DocumentGroup:
    """Documents for one case (trường hợp); ``case`` is None when there is only one."""
    case: str | None
    documents: list[Document] = dc_field(default_factory=list)


@dataclass
class Channel:
    """One way of submitting (cách thức thực hiện): in person, online, by post."""
    form: str
    time: str = ""
    fee: str = ""
    note: str = ""


@dataclass
class Procedure:
    code: str
    name: str
    field: str = ""
    level: str = ""
    agency: str = ""
    channels: list[Channel] = dc_field(default_factory=list)
    documents: list[DocumentGroup] = dc_field(default_factory=list)
    steps: list[str] = dc_field(default_factory=list)
    results: list[str] = dc_field(default_factory=list)
    legal_basis: list[str] = dc_field(default_factory=list)
    conditions: list[str] = dc_field(default_factory=list)
    online_url: str = ""

    @property
    def time_summary(self) -> str:
        return _first(c.time for c in self.channels)

    @property
    def fee_summary(self) -> str:
        return _first(c.fee for c in self.channels)

    def body_text(self) -> str:
        """Everything but the name, for searching."""
        parts = [self.field, self.agency, *self.steps, *self.results, *self.conditions, *self.legal_basis]
        for group in self.documents:
            parts.append(group.case or "")
            parts.extend(d.name for d in group.documents)
        for c in self.channels:
            parts.extend([c.form, c.time, c.fee, c.note])
        return "\n".join(p for p in parts if p)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Procedure":
        d = dict(d)
        d["channels"] = [Channel(**c) for c in d.get("channels", [])]
        d["documents"] = [DocumentGroup(g.get("case"), [Document(**x) for x in g.get("documents", [])])
                          for g in d.get("documents", [])]
        return cls(**d)


def _first(values: Iterable[str]) -> str:
    return next((v for v in values if v), "")


# -- HTML to clean text ---------------------------------------------------------------

class _Blocks(html.parser.HTMLParser):
    """Collects block-level text: paragraphs and list items (one block each), never tags."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "section"}
    SKIP = {"script", "style", "head", "title", "iframe", "object"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.buf: list[str] = []
        self.skip = 0

    def _flush(self) -> None:
        text = _squash("".join(self.buf))
        if text:
            self.blocks.append(text)  # screens number or bullet items themselves
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self._flush()
        elif tag == "td" and self.buf:
            self.buf.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self._flush()

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self._flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _squash(text: str) -> str:
    text = text.replace("\xa0", " ")
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


def clean_blocks(value: str) -> list[str]:
    """HTML or plain text → list of clean paragraphs, one per block or list item."""
    if not value:
        return []
    if "<" in value and re.search(r"</?[a-zA-Z][^>]*>", value):
        parser = _Blocks()
        parser.feed(value)
        parser.close()
        blocks = parser.blocks
    else:
        blocks = [_squash(html.unescape(line)) for line in value.splitlines()]
    return [b for b in blocks if b]


def clean_line(value: str) -> str:
    return " ".join(clean_blocks(value))


# -- parsing the national database's JSON -------------------------------------------

#: Accepted spellings of each field; the national export has changed case over the years.
ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("ma_tthc", "MaTTHC", "maTTHC", "ma_thu_tuc", "code"),
    "name": ("ten_tthc", "TenTTHC", "tenTTHC", "ten_thu_tuc", "name"),
    "field": ("linh_vuc", "LinhVuc", "linhVuc", "field"),
    "level": ("cap_thuc_hien", "CapThucHien", "capThucHien", "level"),
    "agency": ("co_quan_thuc_hien", "CoQuanThucHien", "coQuanThucHien", "agency"),
    "channels": ("cach_thuc_thuc_hien", "CachThucThucHien", "cachThucThucHien", "channels"),
    "documents": ("thanh_phan_ho_so", "ThanhPhanHoSo", "thanhPhanHoSo", "documents"),
    "steps": ("trinh_tu_thuc_hien", "TrinhTuThucHien", "trinhTuThucHien", "steps"),
    "results": ("ket_qua_thuc_hien", "ket_qua", "KetQuaThucHien", "ketQua", "results"),
    "legal_basis": ("can_cu_phap_ly", "CanCuPhapLy", "canCuPhapLy", "legal_basis"),
    "conditions": ("yeu_cau_dieu_kien", "YeuCauDieuKien", "yeuCauDieuKien", "conditions"),
    "online_url": ("link_dvc", "url_dvc", "duong_dan_dvc", "LinkDVC", "url", "online_url"),
    "time": ("thoi_han_giai_quyet", "thoi_gian_giai_quyet", "thoi_han"),
    "fee": ("phi_le_phi", "le_phi", "phi"),
}


def _get(rec: dict, key: str) -> Any:
    for alias in ALIASES[key]:
        if alias in rec and rec[alias] not in (None, ""):
            return rec[alias]
    return None


class _Reader:
    """Parses one record; every error names the record number and field."""

    def __init__(self, index: int, source: str):
        self.index, self.source = index, source

    def fail(self, field: str, message: str) -> CatalogueError:
        return CatalogueError(message, record=self.index, field=field, source=self.source)

    def text(self, value: Any, field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
        if value is None:
            if required:
                raise self.fail(field, "is missing; every procedure needs it")
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, dict):
            value = _get_any_text(value)
        if isinstance(value, list):
            value = "\n".join(self.text(v, field, limit=limit) for v in value)
        if not isinstance(value, str):
            raise self.fail(field, f"must be text, not {type(value).__name__}")
        if "\x00" in value:
            raise self.fail(field, "contains a NUL character; fix the export")
        if len(value) > limit:
            raise self.fail(field, f"is {len(value)} characters; at most {limit} are accepted")
        text = clean_line(value)
        if required and not text:
            raise self.fail(field, "is empty; every procedure needs it")
        return text

    def blocks(self, value: Any, field: str) -> list[str]:
        """Text, HTML, or a list of strings / {"noi_dung": …} / nested lists → paragraphs."""
        if value is None:
            return []
        if isinstance(value, list):
            out: list[str] = []
            for item in value:
                out.extend(self.blocks(item, field))
            return out
        if isinstance(value, dict):
            title = _get_any_text(value, ("ten_buoc", "ten", "so_ky_hieu", "tieu_de"))
            body = _get_any_text(value, ("noi_dung", "mo_ta", "trich_yeu", "chi_tiet", "ten_ket_qua"))
            parts = [clean_line(self._str(title, field)), clean_line(self._str(body, field))]
            line = ": ".join(p for p in parts if p) if title and body and len(title) < 60 else " ".join(p for p in parts if p)
            return [line] if line else []
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [str(value)]
        return clean_blocks(self._str(value, field))

    def _str(self, value: Any, field: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            if isinstance(value, (int, float)):
                return str(value)
            raise self.fail(field, f"must be text, not {type(value).__name__}")
        if "\x00" in value:
            raise self.fail(field, "contains a NUL character; fix the export")
        if len(value) > MAX_TEXT:
            raise self.fail(field, f"is {len(value)} characters; at most {MAX_TEXT} are accepted")
        return value

    def count(self, value: Any, field: str) -> int:
        if value in (None, ""):
            return 0
        try:
            n = int(str(value).strip())
        except ValueError:
            raise self.fail(field, f"must be a whole number of copies, not {str(value)[:40]!r}") from None
        if not 0 <= n <= 100:
            raise self.fail(field, f"{n} copies is not plausible; expected 0 to 100")
        return n

    def documents(self, value: Any) -> list[DocumentGroup]:
        """Either a flat list of documents or a list of cases each holding documents."""
        if value is None:
            return []
        if isinstance(value, str):
            return [DocumentGroup(None, [Document(line.lstrip("•-+ ").strip()) for line in clean_blocks(value)])]
        if not isinstance(value, list):
            raise self.fail("thanh_phan_ho_so", "must be a list of documents or of cases")
        flat: list[Document] = []
        groups: list[DocumentGroup] = []
        for i, item in enumerate(value):
            f = f"thanh_phan_ho_so[{i}]"
            if isinstance(item, str):
                flat.extend(Document(b.lstrip("•-+ ").strip()) for b in clean_blocks(self._str(item, f)))
            elif isinstance(item, dict) and any(k in item for k in ("giay_to", "danh_sach", "thanh_phan", "documents")):
                inner = (item.get("giay_to") or item.get("danh_sach") or item.get("thanh_phan") or item.get("documents")
                         or [])
                case = self.text(item.get("truong_hop") or item.get("ten_truong_hop") or item.get("case"),
                                 f + ".truong_hop") or None
                docs = self.documents(inner)
                groups.append(DocumentGroup(case, [d for g in docs for d in g.documents]))
            elif isinstance(item, dict):
                name = self.text(item.get("ten_giay_to") or item.get("ten") or item.get("name"), f + ".ten_giay_to",
                                 required=True)
                originals = item.get("so_ban_chinh", item.get("ban_chinh", item.get("originals")))
                copies = item.get("so_ban_sao", item.get("ban_sao", item.get("copies")))
                flat.append(Document(name, self.count(originals, f + ".so_ban_chinh"), self.count(copies, f + ".so_ban_sao")))
            elif isinstance(item, list):
                for g in self.documents(item):
                    groups.append(g) if g.case else flat.extend(g.documents)
            else:
                raise self.fail(f, f"must be a document, not {type(item).__name__}")
        if flat:
            groups.insert(0, DocumentGroup(None, flat))
        return groups

    def channels(self, value: Any, rec: dict) -> list[Channel]:
        out: list[Channel] = []
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list):
            for i, item in enumerate(value):
                f = f"cach_thuc_thuc_hien[{i}]"
                if isinstance(item, str):
                    out.append(Channel(self.text(item, f)))
                    continue
                if not isinstance(item, dict):
                    raise self.fail(f, f"must be an object, not {type(item).__name__}")
                fee = item.get("phi_le_phi", item.get("le_phi", item.get("fee")))
                if isinstance(fee, list):
                    fee = "; ".join(_fee_line(x) for x in fee if x)
                out.append(Channel(
                    form=self.text(item.get("hinh_thuc_nop") or item.get("hinh_thuc") or item.get("form") or "Trực tiếp",
                                   f + ".hinh_thuc_nop"),
                    time=self.text(item.get("thoi_han_giai_quyet") or item.get("thoi_han") or item.get("thoi_gian") or item.get("time"),
                                   f + ".thoi_han"),
                    fee=self.text(fee, f + ".phi_le_phi"),
                    note=self.text(item.get("mo_ta") or item.get("note"), f + ".mo_ta"),
                ))
        elif value is not None:
            out.append(Channel(self.text(value, "cach_thuc_thuc_hien")))
        time, fee = _get(rec, "time"), _get(rec, "fee")
        if (time or fee) and not any(c.time or c.fee for c in out):
            if isinstance(fee, list):
                fee = "; ".join(_fee_line(x) for x in fee if x)
            if not out:
                out.append(Channel("Trực tiếp tại Bộ phận Một cửa"))
            out[0].time = self.text(time, "thoi_han_giai_quyet")
            out[0].fee = self.text(fee, "phi_le_phi")
        return out

    def url(self, value: Any) -> str:
        url = self.text(value, "link_dvc", limit=2000)
        if url and not re.match(r"^https?://[^\s<>\"]+$", url):
            raise self.fail("link_dvc", f"must be an http(s) address, not {url[:60]!r}")
        return url


def _fee_line(x: Any) -> str:
    if isinstance(x, dict):
        amount = x.get("muc_phi") or x.get("so_tien") or ""
        desc = x.get("mo_ta") or x.get("ten") or ""
        amount = f"{amount:,} đồng".replace(",", ".") if isinstance(amount, int) else str(amount)
        return clean_line(" – ".join(str(p) for p in (amount, desc) if p))
    return clean_line(str(x))


def _get_any_text(d: dict, keys: tuple[str, ...] = ("ten", "noi_dung", "mo_ta", "name", "text")) -> str:
    for k in keys:
        if isinstance(d.get(k), (str, int, float)) and d.get(k) != "":
            return str(d[k])
    return ""


def parse_record(rec: Any, index: int, source: str = "") -> Procedure:
    r = _Reader(index, source)
    if not isinstance(rec, dict):
        raise r.fail("", f"must be an object with ma_tthc, ten_tthc, …; got {type(rec).__name__}")
    code = r.text(_get(rec, "code"), "ma_tthc", required=True, limit=64)
    if not CODE_RE.match(code):
        raise r.fail("ma_tthc", f"{code[:40]!r} is not a procedure code (letters, digits, '.', '-', up to 32)")
    field_value = _get(rec, "field")
    if isinstance(field_value, list):
        field_value = ", ".join(r.text(v, "linh_vuc") for v in field_value)
    level = _get(rec, "level")
    if isinstance(level, list):
        level = ", ".join(r.text(v, "cap_thuc_hien") for v in level)
    return Procedure(
        code=code,
        name=r.text(_get(rec, "name"), "ten_tthc", required=True, limit=1000),
        field=r.text(field_value, "linh_vuc", limit=300),
        level=r.text(level, "cap_thuc_hien", limit=300),
        agency=r.text(_get(rec, "agency"), "co_quan_thuc_hien", limit=1000),
        channels=r.channels(_get(rec, "channels"), rec),
        documents=r.documents(_get(rec, "documents")),
        steps=r.blocks(_get(rec, "steps"), "trinh_tu_thuc_hien"),
        results=r.blocks(_get(rec, "results"), "ket_qua_thuc_hien"),
        legal_basis=r.blocks(_get(rec, "legal_basis"), "can_cu_phap_ly"),
        conditions=r.blocks(_get(rec, "conditions"), "yeu_cau_dieu_kien"),
        online_url=r.url(_get(rec, "online_url")),
    )


def parse_json(data: bytes | str, source: str = "") -> list[Procedure]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"is not valid JSON ({exc}); export the catalogue again", source=source) from None
    if isinstance(doc, dict):
        for key in ("procedures", "data", "items", "result", "records", "thu_tuc"):
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
        else:
            doc = [doc]
    if not isinstance(doc, list):
        raise CatalogueError("must be a list of procedures or an object with a 'procedures' list", source=source)
    return _check_unique([parse_record(rec, i + 1, source) for i, rec in enumerate(_limit(doc, source))], source)


CSV_COLUMNS = ("ma_tthc", "ten_tthc", "linh_vuc", "cap_thuc_hien", "co_quan_thuc_hien", "cach_thuc_thuc_hien",
               "thoi_han_giai_quyet", "phi_le_phi", "thanh_phan_ho_so", "trinh_tu_thuc_hien", "ket_qua_thuc_hien",
               "can_cu_phap_ly", "yeu_cau_dieu_kien", "link_dvc")


def parse_csv(data: bytes | str, source: str = "") -> list[Procedure]:
    """One row a procedure. Multi-line cells hold lists; a document line may end with
    ``| chính: 1 | sao: 2`` for its original and copy counts."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CatalogueError("is not UTF-8; save the spreadsheet as 'CSV UTF-8'", source=source) from None
    sample = data[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(data), dialect=dialect)
    headers = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = headers
    missing = [c for c in ("ma_tthc", "ten_tthc") if c not in headers]
    if missing:
        raise CatalogueError(f"needs the columns {', '.join(missing)} in its first row (has: {', '.join(headers[:8]) or 'none'})",
                             source=source)
    records = []
    for row in _limit(reader, source):
        if None in row:
            raise CatalogueError(f"has more cells than headers on row {reader.line_num}", source=source,
                                 record=len(records) + 1)
        rec: dict[str, Any] = {k: (v or "").strip() for k, v in row.items() if k}
        if not any(rec.values()):
            continue
        docs = []
        for line in rec.pop("thanh_phan_ho_so", "").splitlines():
            parts = [p.strip() for p in line.split("|")]
            if not parts[0]:
                continue
            doc: dict[str, Any] = {"ten_giay_to": parts[0]}
            for p in parts[1:]:
                k, _, v = p.partition(":")
                k = k.strip().lower()
                if k in ("chính", "chinh", "bản chính", "ban chinh"):
                    doc["so_ban_chinh"] = v.strip()
                elif k in ("sao", "bản sao", "ban sao"):
                    doc["so_ban_sao"] = v.strip()
            docs.append(doc)
        rec["thanh_phan_ho_so"] = docs
        for key in ("trinh_tu_thuc_hien", "ket_qua_thuc_hien", "can_cu_phap_ly", "yeu_cau_dieu_kien"):
            rec[key] = [line for line in rec.get(key, "").splitlines() if line.strip()]
        records.append(rec)
    return _check_unique([parse_record(rec, i + 1, source) for i, rec in enumerate(records)], source)


def _limit(items: Iterable, source: str) -> Iterable:
    for i, item in enumerate(items):
        if i >= MAX_RECORDS:
            raise CatalogueError(f"has more than {MAX_RECORDS} procedures; split the file", source=source)
        yield item


def _check_unique(procs: list[Procedure], source: str) -> list[Procedure]:
    seen: dict[str, int] = {}
    for i, p in enumerate(procs, 1):
        if p.code in seen:
            raise CatalogueError(f"procedure code {p.code} also appears in record {seen[p.code]}",
                                 record=i, field="ma_tthc", source=source)
        seen[p.code] = i
    if not procs:
        raise CatalogueError("holds no procedures", source=source)
    return procs


def read_file(path: Path) -> list[Procedure]:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CatalogueError(f"cannot be read: {exc.strerror}", source=str(path)) from None
    if size > MAX_FILE_BYTES:
        raise CatalogueError(f"is {size // 1_048_576} MiB; at most {MAX_FILE_BYTES // 1_048_576} MiB is accepted",
                             source=str(path))
    data = path.read_bytes()
    if path.suffix.lower() == ".csv":
        return parse_csv(data, str(path))
    if path.suffix.lower() == ".json":
        return parse_json(data, str(path))
    raise CatalogueError("must be a .json export of the national database or a .csv spreadsheet", source=str(path))


# -- storage ----------------------------------------------------------------------------

def store(db: sqlite_utils.Database, procedures: list[Procedure], source: str = "") -> dict[str, int]:
    """Insert or update by code in one transaction. Ratings are in other tables and are
    never touched; procedures missing from the file are kept (a ward may import by field)."""
    now = now_ms()
    added = updated = 0
    with transaction(db):
        known = {r[0] for r in db.execute("SELECT code FROM procedures").fetchall()}
        for p in procedures:
            row = [p.code, p.name, p.field, p.level, json.dumps(p.to_dict(), ensure_ascii=False),
                   normalize(p.name), normalize(p.body_text()), source, now]
            if p.code in known:
                db.execute("""UPDATE procedures SET name=?, field=?, level=?, data=?, name_key=?, body_key=?,
                              source=?, updated_at=? WHERE code=?""", row[1:] + [p.code])
                updated += 1
            else:
                db.execute("INSERT INTO procedures (code, name, field, level, data, name_key, body_key, source, updated_at)"
                           " VALUES (?,?,?,?,?,?,?,?,?)", row)
                added += 1
    return {"added": added, "updated": updated, "total": db.execute("SELECT count(*) FROM procedures").fetchone()[0]}


def import_file(db: sqlite_utils.Database, path: Path) -> dict[str, int]:
    return store(db, read_file(path), source=Path(path).name)


def get(db: sqlite_utils.Database, code: str) -> Procedure | None:
    row = db.execute("SELECT data FROM procedures WHERE code = ?", [code]).fetchone()
    return Procedure.from_dict(json.loads(row[0])) if row else None


def fields(db: sqlite_utils.Database) -> list[tuple[str, int]]:
    """Fields (lĩnh vực) with their procedure counts, for browsing."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT field, count(*) FROM procedures WHERE field != '' GROUP BY field ORDER BY field").fetchall()]


def in_field(db: sqlite_utils.Database, field_name: str) -> list[dict]:
    return [{"code": r[0], "name": r[1], "field": r[2]} for r in db.execute(
        "SELECT code, name, field FROM procedures WHERE field = ? ORDER BY name", [field_name]).fetchall()]


def export_json(db: sqlite_utils.Database) -> list[dict]:
    return [json.loads(r[0]) for r in db.execute("SELECT data FROM procedures ORDER BY code").fetchall()]
