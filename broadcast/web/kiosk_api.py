"""`/api/v1/kiosk/…`: the contract in docs/kiosk-api.md (token per kiosk, submissions
idempotent by uuid in one transaction, catalogue with ETag, announcements)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from .. import kiosk_feed
from .core import Console, api_caller, api_error

router = APIRouter(prefix="/api/v1/kiosk", tags=["kiosk"])

_STR = {"type": ["string", "null"]}
SUBMISSION_SCHEMA = {
    "type": "object",
    "required": ["kiosk_id", "items"],
    "properties": {
        "kiosk_id": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"},
        "items": {"type": "array", "maxItems": kiosk_feed.MAX_ITEMS, "items": {
            "type": "object",
            "required": ["uuid", "kind", "created_ms", "counter_id"],
            "properties": {
                "uuid": {"type": "string", "format": "uuid"},
                "kind": {"type": "string", "enum": ["rating", "feedback"]},
                "created_ms": {"type": "integer"},
                "counter_id": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"},
                "level": {"type": "integer", "minimum": 1, "maximum": 5},
                "source": {"type": "string", "enum": ["button", "screen"]},
                "officer_id": {**_STR, "maxLength": 64},
                "procedure_code": {**_STR, "maxLength": 32},
                "field": {**_STR, "maxLength": 200},
                "factors": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 5}},
                "reasons": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 64}},
                "comment": {**_STR, "maxLength": 2000},
                "category": {"type": "string", "enum": ["gop_y", "phan_anh"]},
                "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                "phone": {**_STR, "pattern": "^[0-9 +().-]{6,20}$"},
                "name": {**_STR, "maxLength": 200},
            }}},
    },
}
ERROR_SCHEMA = {"type": "object", "required": ["error", "field", "message", "message_vi"], "properties": {
    "error": {"type": "string"}, "field": {"type": "string"}, "message": {"type": "string"},
    "message_vi": {"type": "string"}}}


def _error(status: int, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


AUTH_ERRORS = {401: _error(401, "missing or unknown token"), 403: _error(403, "the token belongs to another kiosk")}


def _kiosk(request: Request):
    """(kiosk id, None) or (None, error response)."""
    caller = api_caller(request)
    if caller is None:
        return None, api_error(401, "authorization", "missing or unknown bearer token",
                               "Thiếu mã truy cập hoặc mã không hợp lệ", "unauthorized")
    if caller.kind != "kiosk":
        return None, api_error(403, "authorization", "this token is not a kiosk token",
                               "Mã truy cập này không phải của kiosk", "forbidden")
    return caller.subject, None


@router.post("/submissions", summary="Upload ratings and feedback from a kiosk outbox (idempotent by uuid)",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": SUBMISSION_SCHEMA}}}},
             responses={200: {"description": "stored", "content": {"application/json": {"schema": {
                 "type": "object", "properties": {"accepted": {"type": "array", "items": {"type": "string"}},
                                                  "duplicates": {"type": "array", "items": {"type": "string"}}}}}}},
                        **AUTH_ERRORS, 413: _error(413, "over 500 items or 1 MiB"),
                        422: _error(422, "a malformed item; the whole batch is refused")})
async def submissions(request: Request):
    console: Console = request.app.state.console
    kiosk_id, err = await run_in_threadpool(_kiosk, request)
    if err:
        return err
    raw = await request.body()
    if len(raw) > kiosk_feed.MAX_BODY_BYTES:
        return api_error(413, "body", "request body over 1 MiB", "Nội dung gửi quá lớn: tối đa 1 MiB", "too_large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return api_error(422, "body", "the body is not JSON", "Nội dung gửi không phải JSON hợp lệ")
    try:
        items = kiosk_feed.validate_batch(body, kiosk_id)
    except kiosk_feed.ItemError as exc:
        return JSONResponse(exc.body(), status_code=422)
    except kiosk_feed.BatchTooLarge:
        return api_error(413, "items", f"more than {kiosk_feed.MAX_ITEMS} items",
                         f"Quá {kiosk_feed.MAX_ITEMS} mục trong một lần gửi", "too_large")
    except PermissionError:
        return api_error(403, "kiosk_id", "kiosk_id is not the token's kiosk",
                         "Mã kiosk không khớp với mã truy cập", "forbidden")
    result = await run_in_threadpool(lambda: kiosk_feed.store_batch(console.db, kiosk_id, items))
    return result


@router.get("/catalogue", summary="The ward's procedure catalogue (ETag = version)",
            responses={200: {"description": "the catalogue", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"version": {"type": "string"},
                                                 "procedures": {"type": "array", "items": {"type": "object"}}}}}}},
                       304: {"description": "not modified"}, 404: _error(404, "no catalogue imported"),
                       **AUTH_ERRORS})
def get_catalogue(request: Request):
    console: Console = request.app.state.console
    _kiosk_id, err = _kiosk(request)
    if err:
        return err
    found = kiosk_feed.catalogue(console.db)
    if found is None:
        return api_error(404, "catalogue", "the station holds no catalogue",
                         "Trạm chưa có danh mục thủ tục", "not_found")
    version, body = found
    etag = f'"{version}"'
    if request.headers.get("if-none-match") in (etag, version):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-cache"})


@router.get("/announcements", summary="Approved, non-emergency bulletins of the last 14 days",
            responses={200: {"description": "announcements", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"announcements": {"type": "array", "items": {"type": "object"}}}}}}},
                       **AUTH_ERRORS})
def get_announcements(request: Request):
    console: Console = request.app.state.console
    _kiosk_id, err = _kiosk(request)
    if err:
        return err
    return {"announcements": kiosk_feed.announcements(console.db)}
