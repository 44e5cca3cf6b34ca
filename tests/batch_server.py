"""A real HTTP batch provider for tests: the OpenAI files + batches endpoints on 127.0.0.1, on top
of tests/teacher_server.py (the same responder, so a batch answers exactly what a live call would).

Endpoints: POST /v1/files (multipart upload, purpose=batch), GET /v1/files/{id}/content,
POST /v1/batches, GET /v1/batches/{id}; /v1/chat/completions stays live (the judge, retried items).
A batch walks validating -> in_progress -> completed, one step per retrieve (`steps`), and answers
every line of its input file with the responder. Faults:
  fail_item(line) -> str | None   that line goes to the errors file with this error code
  expire=True                     the batch ends `expired`: the first `expire_after` lines answered,
                                  the rest in the errors file (code batch_expired), as OpenAI does
  create_status=400               POST /v1/batches answers this status (the upload still works)
  hold=True                       batches stay in_progress until `hold` is set false (a long batch)
`creates`, `uploads`, `retrieves` and `batches` record what the client did.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Callable

from aiohttp import web

from teacher_server import TeacherServer

STEPS = ("validating", "in_progress", "completed")


class BatchServer(TeacherServer):
    def __init__(self, *, steps: tuple[str, ...] = STEPS, fail_item: Callable[[dict], str | None] | None = None,
                 expire: bool = False, expire_after: int = 0, create_status: int | None = None,
                 hold: bool = False, **kw: Any):
        super().__init__(**kw)
        self.hold = hold
        self.steps = steps
        self.fail_item = fail_item
        self.expire = expire
        self.expire_after = expire_after
        self.create_status = create_status
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.creates = 0
        self.uploads = 0
        self.retrieves = 0
        self._ids = itertools.count(1)

    # -- routing ---------------------------------------------------------------------------
    async def _post(self, request: "web.Request") -> "web.StreamResponse":
        path = request.path.rstrip("/")
        if path.endswith("/files"):
            return await self._upload(request)
        if path.endswith("/batches"):
            return await self._create(request)
        return await super()._post(request)

    async def _get(self, request: "web.Request") -> "web.Response":
        parts = request.path.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "batches":
            return await self._retrieve(parts[-1])
        if len(parts) >= 3 and parts[-1] == "content" and parts[-3] == "files":
            data = self.files.get(parts[-2])
            if data is None:
                return web.json_response({"error": {"message": "no such file"}}, status=404)
            return web.Response(body=data, content_type="application/octet-stream")
        return await super()._get(request)

    # -- files -----------------------------------------------------------------------------
    async def _upload(self, request: "web.Request") -> "web.Response":
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or purpose != "batch":
            return web.json_response({"error": {"message": "file and purpose=batch required"}}, status=400)
        data = upload.file.read()
        for line in data.decode("utf-8").splitlines():  # every line a request, as the provider checks
            json.loads(line)
        self.uploads += 1
        fid = self._add_file(data)
        return web.json_response({"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": upload.filename, "purpose": "batch", "status": "processed"})

    def _add_file(self, data: bytes) -> str:
        fid = f"file-{next(self._ids)}"
        self.files[fid] = data
        return fid

    # -- batches ---------------------------------------------------------------------------
    async def _create(self, request: "web.Request") -> "web.Response":
        body = json.loads(await request.read())
        self.creates += 1
        if self.create_status:
            return web.json_response({"error": {"message": "batch quota exceeded", "type": "invalid_request_error"}},
                                     status=self.create_status)
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        bid = f"batch_{next(self._ids)}"
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                             "status": self.steps[0], "output_file_id": None, "error_file_id": None,
                             "created_at": int(time.time()), "metadata": body.get("metadata"),
                             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_step": 0}
        return web.json_response(self._public(self.batches[bid]))

    async def _retrieve(self, bid: str) -> "web.Response":
        batch = self.batches.get(bid)
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self.retrieves += 1
        if self.hold:
            batch["status"] = "in_progress"
        elif batch["status"] not in ("completed", "expired"):
            batch["_step"] = min(batch["_step"] + 1, len(self.steps) - 1)
            final = batch["_step"] == len(self.steps) - 1
            batch["status"] = ("expired" if self.expire else self.steps[-1]) if final else self.steps[batch["_step"]]
            if final:
                await self._run(batch)
        return web.json_response(self._public(batch))

    async def _run(self, batch: dict) -> None:
        """Answer every line of the input file through the teacher's own answer path."""
        out, errs = [], []
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].decode().splitlines()]
        for n, line in enumerate(lines):
            rid = f"batch_req_{batch['id']}_{n}"
            code = "batch_expired" if self.expire and n >= self.expire_after else \
                (self.fail_item(line) if self.fail_item else None)
            if code:
                errs.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                             "error": {"code": code, "message": f"request failed: {code}"}})
                continue
            number = self.stats.enter()
            with self._log_lock:
                self.log.append({"number": number, "fault": None, "body": line["body"], "auth": None, "batch": True})
            status, resp = await self._answer(None, line["body"], number, None)
            self.stats.leave(status)
            out.append({"id": rid, "custom_id": line["custom_id"],
                        "response": {"status_code": status, "request_id": rid, "body": json.loads(resp.text)},
                        "error": None})
        if out:
            batch["output_file_id"] = self._add_file("".join(json.dumps(o) + "\n" for o in out).encode())
        if errs:
            batch["error_file_id"] = self._add_file("".join(json.dumps(e) + "\n" for e in errs).encode())
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errs)}
        batch["completed_at" if not self.expire else "expired_at"] = int(time.time())

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    @property
    def batch_lines(self) -> int:
        """Requests answered inside batches (the chat log's `batch` entries)."""
        with self._log_lock:
            return sum(1 for e in self.log if e.get("batch"))
