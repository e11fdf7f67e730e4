"""Catalogue import and search: both source formats, hostile files, ranking, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiosk import catalogue
from kiosk.catalogue import CatalogueError
from kiosk.db import open_db
from kiosk.search import SearchIndex, normalize
from tests.kiosk_support import SAMPLE_CSV, SAMPLE_JSON, write_kiosk_config


@pytest.fixture
def db():
    return open_db(":memory:")


def test_sample_catalogue_is_realistic_and_imports(db):
    procs = catalogue.read_file(SAMPLE_JSON)
    assert len(procs) >= 30
    assert len({p.field for p in procs}) >= 6
    result = catalogue.store(db, procs)
    assert result == {"added": len(procs), "updated": 0, "total": len(procs)}
    birth = catalogue.get(db, "1.001193")
    assert birth.name == "Thủ tục đăng ký khai sinh"
    assert birth.steps[0].startswith("Bước 1:") and "<" not in "".join(birth.steps)
    assert birth.documents[0].documents[0].originals == 1
    assert birth.online_url.startswith("https://")
    assert birth.fee_summary and birth.time_summary


def test_html_and_entities_become_clean_paragraphs():
    rec = {"ma_tthc": "X.1", "ten_tthc": "Thủ tục &quot;thử&quot; <b>nghiệm</b>",
           "trinh_tu_thuc_hien": "<p>Bước&nbsp;1: nộp</p><ul><li>Bản <i>chính</i></li><li>Bản sao &amp; bản dịch</li></ul>"
                                 "<script>alert(1)</script><p>Kết thúc<br/>dòng mới</p>",
           "yeu_cau_dieu_kien": "Không &lt;có&gt;"}
    p = catalogue.parse_record(rec, 1)
    assert p.name == 'Thủ tục "thử" nghiệm'
    assert p.steps == ["Bước 1: nộp", "Bản chính", "Bản sao & bản dịch", "Kết thúc", "dòng mới"]
    assert p.conditions == ["Không <có>"]  # text, not markup: the screen escapes it


def test_documents_in_flat_and_nested_shapes():
    flat = catalogue.parse_record({"ma_tthc": "A", "ten_tthc": "A", "thanh_phan_ho_so": [
        {"ten_giay_to": "Tờ khai", "so_ban_chinh": "1", "so_ban_sao": 2}, "Giấy tờ khác"]}, 1)
    assert [(d.name, d.originals, d.copies) for d in flat.documents[0].documents] == [("Tờ khai", 1, 2), ("Giấy tờ khác", 0, 0)]
    nested = catalogue.parse_record({"ma_tthc": "B", "ten_tthc": "B", "thanh_phan_ho_so": [
        {"truong_hop": "Trường hợp 1", "giay_to": [{"ten_giay_to": "Đơn", "so_ban_chinh": 1}]},
        {"truong_hop": "Trường hợp 2", "giay_to": [[{"ten_giay_to": "Bản án", "so_ban_sao": 1}]]}]}, 1)
    assert [g.case for g in nested.documents] == ["Trường hợp 1", "Trường hợp 2"]
    assert nested.documents[1].documents[0].copies == 1


def test_missing_fields_are_tolerated():
    p = catalogue.parse_record({"ma_tthc": "C.1", "ten_tthc": "Chỉ có tên"}, 1)
    assert p.steps == [] and p.documents == [] and p.online_url == ""


@pytest.mark.parametrize("records, field", [
    ([{"ten_tthc": "không mã"}], "ma_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": ""}], "ten_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": "x"}, {"ma_tthc": "1", "ten_tthc": "y"}], "ma_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": "x", "link_dvc": "javascript:alert(1)"}], "link_dvc"),
    ([{"ma_tthc": "1", "ten_tthc": "x", "thanh_phan_ho_so": [{"ten_giay_to": "a", "so_ban_chinh": "nhiều"}]}],
     "thanh_phan_ho_so[0].so_ban_chinh"),
    ([{"ma_tthc": "../../etc", "ten_tthc": "x"}], "ma_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": "x" * 5000}], "ten_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": "a\x00b"}], "ten_tthc"),
    ([{"ma_tthc": "1", "ten_tthc": ["x"], "linh_vuc": {"a": [1]}}], None),
])
def test_bad_records_name_record_and_field(records, field):
    good = [{"ma_tthc": "OK.1", "ten_tthc": "Tốt"}]
    with pytest.raises(CatalogueError) as err:
        catalogue.parse_json(json.dumps(good + records))
        if field is None:
            raise CatalogueError("accepted")
    if field:
        assert err.value.field == field and err.value.record >= 2, str(err.value)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"42", b'"text"', b"[]", b"[1]", b'{"procedures": 5}'])
def test_malformed_json_is_refused(data):
    with pytest.raises(CatalogueError):
        catalogue.parse_json(data, "x.json")


def test_broken_file_imports_nothing_and_reimport_updates_in_place(tmp_path, db):
    catalogue.store(db, catalogue.read_file(SAMPLE_JSON))
    db.execute("INSERT INTO ratings (uuid, created_ms, kiosk_id, counter_id, level, source, procedure_code)"
               " VALUES ('u1', 1, 'k', 'q', 5, 'screen', '1.001193')")
    before = catalogue.export_json(db)
    doc = json.loads(SAMPLE_JSON.read_text())
    doc["procedures"][0]["ten_tthc"] = "Thủ tục đăng ký khai sinh (sửa đổi)"
    doc["procedures"][5]["thanh_phan_ho_so"] = [{"ten_giay_to": ""}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc, ensure_ascii=False))
    with pytest.raises(CatalogueError, match="record 6"):
        catalogue.import_file(db, bad)
    assert catalogue.export_json(db) == before
    doc["procedures"][5]["thanh_phan_ho_so"] = []
    bad.write_text(json.dumps(doc, ensure_ascii=False))
    result = catalogue.import_file(db, bad)
    assert result["updated"] == len(doc["procedures"]) and result["added"] == 0
    assert catalogue.get(db, "1.001193").name.endswith("(sửa đổi)")
    assert db.execute("SELECT count(*) FROM ratings").fetchone()[0] == 1


def test_csv_catalogue(db, tmp_path):
    procs = catalogue.read_file(SAMPLE_CSV)
    assert procs[0].documents[0].documents[0].originals == 1
    assert procs[0].steps[1].startswith("Công chức")
    semi = tmp_path / "semi.csv"
    semi.write_text("ma_tthc;ten_tthc;linh_vuc\nA-1;Thủ tục A;Hộ tịch\n", encoding="utf-8")
    assert catalogue.read_file(semi)[0].field == "Hộ tịch"
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("a,b\n1,2\n")
    with pytest.raises(CatalogueError, match="ma_tthc"):
        catalogue.read_file(nohead)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("ma_tthc,ten_tthc\n1,Đăng ký\n".encode("cp1258", errors="replace") + b"\xff")
    with pytest.raises(CatalogueError, match="UTF-8"):
        catalogue.read_file(latin)


def test_unknown_extension_and_oversized(tmp_path, monkeypatch):
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(CatalogueError, match=".json"):
        catalogue.read_file(tmp_path / "x.xlsx")
    monkeypatch.setattr(catalogue, "MAX_FILE_BYTES", 10)
    (tmp_path / "big.json").write_text("[" + " " * 20 + "]")
    with pytest.raises(CatalogueError, match="MiB"):
        catalogue.read_file(tmp_path / "big.json")


def test_normalize():
    assert normalize("Đăng ký KẾT HÔN") == "dang ky ket hon"
    assert normalize("đ Đ") == "d d"
    assert normalize("  <b>Hộ-tịch</b>  ") == "b ho tich b"


@pytest.fixture
def index(db):
    catalogue.store(db, catalogue.read_file(SAMPLE_JSON))
    return SearchIndex.from_db(db)


@pytest.mark.parametrize("query, code", [
    ("khai sinh", "1.001193"), ("KHAI SINH", "1.001193"), ("đăng ký kết hôn", "1.000894"),
    ("dang ky ket hon", "1.000894"), ("dang ky ket hno", "1.000894"), ("ket hon", "1.000894"),
    ("khai tu", "1.000656"), ("chung thuc ban sao", "2.000815"), ("giam ho", "1.000689"),
    ("tinh trang hon nhan", "1.004873"), ("xac dinh muc do khuyet tat", "1.001699"), ("doi giay xac nhan khuyet tat", "1.001653"), ("hoa giai vien", "2.000930"),
])
def test_search_ranks_the_expected_procedure_first(index, query, code):
    hits = index.search(query)
    assert hits and hits[0].code == code, [h.name for h in hits[:3]]


def test_name_matches_rank_above_body_matches(index):
    hits = index.search("khai sinh")
    names = [h for h in hits if "khai sinh" in normalize(h.name)]
    body_only = [h for h in hits if "khai sinh" not in normalize(h.name)]
    assert names and body_only
    assert hits.index(names[-1]) < hits.index(body_only[0])


def test_browse_and_filter_by_field(index, db):
    fields = dict(catalogue.fields(db))
    assert fields["Hộ tịch"] >= 8
    assert {h.field for h in index.search("thu tuc", field="Chứng thực")} == {"Chứng thực"}
    assert index.search("") == [] and index.search("!!!") == []
    assert index.search("x" * 10_000) == []


def test_cli_import_and_search_json(tmp_path):
    cfg = write_kiosk_config(tmp_path, catalogue=None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "thanthien", "kiosk", "--config", str(cfg), *a],
                                    capture_output=True, text=True, timeout=60)
    r = run("import", str(SAMPLE_JSON))
    assert r.returncode == 0, r.stderr
    assert "added" in r.stdout
    r = run("search", "dang ky ket hon", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert hits[0]["code"] == "1.000894" and hits[0]["name"] == "Thủ tục đăng ký kết hôn" and hits[0]["field"] == "Hộ tịch"
    r = subprocess.run([sys.executable, "-m", "thanthien", "kiosk", "search", "zzqx wwvv", "--json",
                        "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and json.loads(r.stdout) == []
    bad = tmp_path / "bad.json"
    bad.write_text('[{"ma_tthc": "1"}]')
    r = run("import", str(bad))
    assert r.returncode == 2 and "record 1" in r.stderr and "ten_tthc" in r.stderr and "nothing was imported" in r.stderr
    r = run("import", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot be read" in r.stderr
    r = run("search", "a", "--limit", "0")
    assert r.returncode == 2
