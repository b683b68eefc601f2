"""The fake provider's Files and Batches endpoints, OpenAI's (Groq's under /openai/v1) and
Gemini's, with the turnaround, partial failures, duplicated lines and expired batches set
through ``POST /_batches`` (docs/design.md, "The fake Batch APIs")."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batchgen.fakes.llm_server import (
    STATE,
    FakeState,
    _Call,
    _content_text,
    _gemini_body,
    _openai_body,
)


@dataclass
class BatchConfig:
    turnaround: float = 0.0
    duplicate_lines: bool = False
    end_as: str = "completed"   # or "expired" / "failed"
    partial_share: float = 0.5


@dataclass
class _Batches:
    config: BatchConfig = field(default_factory=BatchConfig)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids: itertools.count = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-fake-{next(self.ids)}"


BATCHES = web.AppKey("batches", _Batches)


async def upload(request: web.Request) -> web.Response:
    store = request.app[BATCHES]
    form = await request.post()
    upload_field = form.get("file")
    if upload_field is None or not hasattr(upload_field, "file"):
        return web.json_response({"error": {"message": "file is required"}}, status=400)
    data = upload_field.file.read()
    file_id = store.new_id("file")
    store.files[file_id] = data
    return web.json_response(_file(file_id, len(data), str(form.get("purpose", "batch"))))


def _file(file_id: str, size: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
            "filename": f"{file_id}.jsonl", "purpose": purpose, "status": "processed"}


async def content(request: web.Request) -> web.Response:
    data = request.app[BATCHES].files.get(request.match_info["file_id"])
    if data is None:
        return web.json_response({"error": {"message": "no such file"}}, status=404)
    return web.Response(body=data, content_type="application/octet-stream")


async def create(request: web.Request) -> web.Response:
    store = request.app[BATCHES]
    body = await request.json()
    if body.get("input_file_id") not in store.files:
        return web.json_response({"error": {"message": "input_file_id not found"}}, status=400)
    batch_id = store.new_id("batch")
    store.batches[batch_id] = _new_batch(batch_id, body["input_file_id"], "openai")
    store.batches[batch_id]["endpoint"] = body.get("endpoint", "")
    return web.json_response(_public(store.batches[batch_id]))


def _new_batch(batch_id: str, input_file_id: str, kind: str) -> dict[str, Any]:
    return {
        "id": batch_id, "object": "batch", "_kind": kind, "endpoint": "",
        "input_file_id": input_file_id, "completion_window": "24h",
        "status": "in_progress", "created_at": int(time.time()), "_created": time.monotonic(),
        "output_file_id": None, "error_file_id": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _looked_up(request: web.Request, cancelling: bool) -> dict[str, Any] | None:
    store = request.app[BATCHES]
    batch = store.batches.get(request.match_info["batch_id"])
    if batch is None or batch["status"] != "in_progress":
        return batch
    ready = time.monotonic() - batch["_created"] >= store.config.turnaround
    if cancelling:
        _finish(store, batch, "cancelled", request, share=1.0 if ready else 0.0)
    elif ready:
        _finish(store, batch, store.config.end_as, request)
    return batch


async def retrieve(request: web.Request, cancelling: bool = False) -> web.Response:
    batch = _looked_up(request, cancelling)
    if batch is None:
        return web.json_response({"error": {"message": "no such batch"}}, status=404)
    return web.json_response(_public(batch))


async def cancel(request: web.Request) -> web.Response:
    return await retrieve(request, cancelling=True)


def _finish(store: _Batches, batch: dict[str, Any], status: str, request: web.Request,
            share: float | None = None) -> None:
    lines = [json.loads(text) for text in store.files[batch["input_file_id"]].splitlines()
             if text.strip()]
    if status != "completed":
        share = store.config.partial_share if share is None else share
        lines = lines[:int(len(lines) * share)]
    key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    answer = _gemini_answer if batch["_kind"] == "gemini" else _answer
    outputs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for line in lines:
        result = answer(request.app[STATE], line, key)
        failed = result.get("error") or result["response"].get("status_code", 200) != 200
        (failures if failed else outputs).append(result)
    copies = 2 if store.config.duplicate_lines else 1
    outputs = [o for o in outputs for _ in range(copies)]
    if batch["_kind"] == "gemini":  # one responses file, errors included
        outputs, failures = outputs + failures, []
    batch["output_file_id"] = _store(store, outputs)
    batch["error_file_id"] = _store(store, failures)
    batch["request_counts"] = {"total": len(lines), "completed": len(outputs),
                               "failed": len(failures)}
    batch["status"] = status
    batch[f"{status}_at" if status != "completed" else "completed_at"] = int(time.time())


def _store(store: _Batches, lines: list[dict[str, Any]]) -> str | None:
    if not lines:
        return None
    file_id = store.new_id("file")
    store.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return file_id


def _answer(state: FakeState, line: dict[str, Any], key: str) -> dict[str, Any]:
    body = line.get("body") or {}
    messages = body.get("messages") or []
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    call = _Call("batch", str(body.get("model", "")),
                 "\n".join(_content_text(m.get("content")) for m in messages),
                 users[-1] if users else "", key)
    # The chat endpoint's fault rules, so "[[fault:500x1]]" fails once, batch or sync.
    fault = state.fault_for(call)
    if fault and fault.isdigit():
        status = int(fault)
        return {"id": f"req-{line.get('custom_id')}", "custom_id": line.get("custom_id"),
                "response": {"status_code": status,
                             "body": {"error": {"message": f"fake fault {status}"}}},
                "error": None}
    reply = _openai_body(call, f"Reply to: {call.user_text[:60]}", "stop")
    return {"id": f"req-{line.get('custom_id')}", "custom_id": line.get("custom_id"),
            "response": {"status_code": 200, "request_id": reply["id"], "body": reply},
            "error": None}


def _gemini_answer(state: FakeState, line: dict[str, Any], key: str) -> dict[str, Any]:
    body = line.get("request") or {}

    def text(content: Any) -> str:
        return " ".join(str(p.get("text", "")) for p in (content or {}).get("parts") or [])

    users = [text(c) for c in body.get("contents") or []]
    call = _Call("batch", "gemini", "\n".join([text(body.get("systemInstruction")), *users]),
                 users[-1] if users else "", key)
    fault = state.fault_for(call)
    if fault and fault.isdigit():
        return {"key": line.get("key"), "response": {"status_code": int(fault)},
                "error": {"code": int(fault), "message": f"fake fault {fault}"}}
    return {"key": line.get("key"),
            "response": _gemini_body(call, f"Reply to: {call.user_text[:60]}", "STOP")}


_GEMINI_STATES = {"in_progress": "BATCH_STATE_RUNNING", "completed": "BATCH_STATE_SUCCEEDED",
                  "expired": "BATCH_STATE_EXPIRED", "failed": "BATCH_STATE_FAILED",
                  "cancelled": "BATCH_STATE_CANCELLED"}


def _gemini_job(batch: dict[str, Any]) -> dict[str, Any]:
    output = {"responsesFile": f"files/{batch['output_file_id']}"} \
        if batch["output_file_id"] else {}
    return {"name": f"batches/{batch['id']}", "done": batch["status"] != "in_progress",
            "metadata": {"state": _GEMINI_STATES[batch["status"]], "output": output,
                         "model": "models/fake"}}


async def gemini_upload(request: web.Request) -> web.Response:
    """The resumable protocol, in one or more chunks: start, then upload(, finalize)."""
    store = request.app[BATCHES]
    command = request.headers.get("X-Goog-Upload-Command", "")
    if "start" in command:
        upload_id = store.new_id("upload")
        store.files[upload_id] = b""
        url = f"{request.scheme}://{request.host}/upload/v1beta/files?upload_id={upload_id}"
        return web.json_response({}, headers={"X-Goog-Upload-URL": url})
    upload_id = request.query.get("upload_id", "")
    if upload_id not in store.files:
        return web.json_response({"error": {"code": 404, "message": "no such upload"}},
                                 status=404)
    store.files[upload_id] += await request.read()
    if "finalize" not in command:
        return web.json_response({}, headers={"X-Goog-Upload-Status": "active"})
    file_id = store.new_id("file")
    store.files[file_id] = store.files.pop(upload_id)
    body = {"file": {"name": f"files/{file_id}", "mimeType": "jsonl",
                     "sizeBytes": str(len(store.files[file_id])), "state": "ACTIVE"}}
    return web.json_response(body, headers={"X-Goog-Upload-Status": "final"})


def _file_name(found: Any) -> str | None:
    # The create body nests it ({"batch": {"inputConfig": {"fileName": ...}}}): find it.
    if isinstance(found, dict):
        if isinstance(found.get("fileName"), str):
            return found["fileName"]
        return next((n for v in found.values() if (n := _file_name(v))), None)
    return None


async def gemini_create(request: web.Request) -> web.Response:
    store = request.app[BATCHES]
    name = _file_name(await request.json()) or ""
    file_id = name.removeprefix("files/")
    if file_id not in store.files:
        return web.json_response({"error": {"code": 400, "message": "fileName not found"}},
                                 status=400)
    batch_id = store.new_id("batch")
    store.batches[batch_id] = _new_batch(batch_id, file_id, "gemini")
    return web.json_response(_gemini_job(store.batches[batch_id]))


async def gemini_get(request: web.Request, cancelling: bool = False) -> web.Response:
    batch = _looked_up(request, cancelling)
    if batch is None:
        return web.json_response({"error": {"code": 404, "message": "no such batch"}},
                                 status=404)
    return web.json_response(_gemini_job(batch))


async def gemini_cancel(request: web.Request) -> web.Response:
    await gemini_get(request, cancelling=True)
    return web.json_response({})


async def control(request: web.Request) -> web.Response:
    store = request.app[BATCHES]
    if request.method == "POST":
        changes = await request.json()
        unknown = set(changes) - {f.name for f in dataclasses.fields(BatchConfig)}
        if unknown:
            return web.json_response({"error": f"unknown settings {sorted(unknown)}"},
                                     status=400)
        store.config = dataclasses.replace(store.config, **changes)
    return web.json_response({"config": dataclasses.asdict(store.config),
                              "batches": [_public(b) for b in store.batches.values()]})


def register(app: web.Application) -> None:
    """Add the Files and Batches routes for OpenAI (/v1), Groq (/openai/v1) and Gemini."""
    app[BATCHES] = _Batches()
    for prefix in ("/v1", "/openai/v1"):
        app.router.add_post(f"{prefix}/files", upload)
        app.router.add_get(f"{prefix}/files/{{file_id}}/content", content)
        app.router.add_post(f"{prefix}/batches", create)
        app.router.add_get(f"{prefix}/batches/{{batch_id}}", retrieve)
        app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel)
    app.router.add_post("/upload/v1beta/files", gemini_upload)
    app.router.add_post("/v1beta/models/{model}:batchGenerateContent", gemini_create)
    app.router.add_get("/v1beta/batches/{batch_id}", gemini_get)
    app.router.add_post("/v1beta/batches/{batch_id}:cancel", gemini_cancel)
    app.router.add_get("/v1beta/files/{file_id}:download", content)
    app.router.add_route("*", "/_batches", control)
