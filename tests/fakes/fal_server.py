"""A fake fal queue (queue.fal.run) and file CDN (fal.media) on 127.0.0.1.

The queue speaks fal's queue API: ``POST /{model_id}`` submits and answers with the
request's ``status_url``/``response_url``/``cancel_url`` (under the app's owner/name, without
the model's sub-path, as fal does); ``GET …/status`` walks the job through the ``Plan``'s
steps, one step per poll, then says COMPLETED; ``GET …/requests/{id}`` answers with the
plan's output or its failure; ``PUT …/cancel`` answers 202 CANCELLATION_REQUESTED, or 400
ALREADY_COMPLETED once the job has finished. Files named in outputs are served by a second
server on another port, the CDN, which records whether anyone sent it a key.

Each submitted job takes the next queued ``Plan`` (default: done at once, one image); each
request first takes the next queued ``Reply`` if one is queued (errors, 429s, delays).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.wire import Exchange, Received, WireServer

API_KEY = "fal-test-key-id:0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + b"fake-png-bytes"
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"fake-mp4-bytes"


@dataclass
class Plan:
    """How one job goes: the status bodies of successive polls, then its outcome."""

    steps: list[dict[str, Any]] = field(default_factory=list)  # e.g. {"status": "IN_QUEUE", "queue_position": 2}
    output: dict[str, Any] | None = None  # the model's output; None: one image
    failure: tuple[int, dict[str, Any]] | None = None  # (status, body) the response URL answers instead
    status_error: dict[str, Any] | None = None  # error fields the COMPLETED status carries


@dataclass
class Reply:
    """A canned answer that pre-empts the next request's normal handling."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # a non-JSON body (a proxy's HTML page)


@dataclass
class _Job:
    model: str
    plan: Plan
    polls: int = 0
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.polls > len(self.plan.steps)


def queued(position: int) -> dict[str, Any]:
    return {"status": "IN_QUEUE", "queue_position": position}


def running(*messages: str) -> dict[str, Any]:
    return {"status": "IN_PROGRESS",
            "logs": [{"message": m, "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:00Z"}
                     for m in messages]}


class FakeFal:
    """``with FakeFal() as fake:`` point a provider at ``fake.base_url``; see ``fake.received``."""

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.jobs: dict[str, _Job] = {}
        self._plans: deque[Plan] = deque()
        self._replies: deque[Reply] = deque()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._queue = WireServer(self._route)
        self._cdn = WireServer(self._serve_file)
        self.base_url = self._queue.origin

    def __enter__(self) -> FakeFal:
        self._queue.__enter__()
        self._cdn.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.__exit__(*exc)
        self._cdn.__exit__(*exc)

    def plan(self, *plans: Plan) -> None:
        """How the next submitted jobs go, in order."""
        self._plans.extend(plans)

    def push(self, *replies: Reply) -> None:
        """Canned answers for the next requests to the queue, in order."""
        self._replies.extend(replies)

    @property
    def received(self) -> list[Received]:
        return self._queue.received

    @property
    def cdn_received(self) -> list[Received]:
        return self._cdn.received

    @property
    def connections(self) -> int:
        return self._queue.connections

    # --- outputs ----------------------------------------------------------------------------

    def file(self, name: str, data: bytes, content_type: str) -> str:
        """Serve a file from the CDN; returns its URL."""
        self._files[f"/files/{name}"] = (data, content_type)
        return f"{self._cdn.origin}/files/{name}"

    def image_output(self, count: int = 1) -> dict[str, Any]:
        images = [{"url": self.file(f"{uuid.uuid4().hex}.png", PNG + bytes([i]), "image/png"),
                   "width": 1024, "height": 768, "content_type": "image/png"} for i in range(count)]
        return {"images": images, "timings": {"inference": 0.42}, "seed": 42,
                "has_nsfw_concepts": [False] * count, "prompt": "a fake prompt"}

    def video_output(self, duration: float | str | None = None) -> dict[str, Any]:
        video: dict[str, Any] = {"url": self.file(f"{uuid.uuid4().hex}.mp4", MP4, "video/mp4"),
                                 "content_type": "video/mp4", "file_name": "output.mp4", "file_size": len(MP4)}
        if duration is not None:
            video["duration"] = duration
        return {"video": video}

    # --- routing ------------------------------------------------------------------------------

    def _route(self, req: Received, ex: Exchange) -> None:
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply and reply.delay:
            ex.wait(reply.delay)
        if req.header("authorization") != f"Key {self.api_key}":
            return ex.json(401, {"detail": "Invalid Key authorization header format or invalid credentials."})
        if reply:
            if reply.raw is not None:
                return ex.body(reply.status, reply.raw, {"content-type": "text/html", **reply.headers})
            return ex.json(reply.status, reply.body, reply.headers)
        path = req.path.partition("?")[0]
        match = re.fullmatch(r"/([^/]+/[^/]+)/requests/([^/]+)(/status|/cancel)?", path)
        if not match:
            if req.method == "POST":
                return self._submit(path.strip("/"), ex)
            return ex.json(404, {"detail": "Not Found"})
        root, request_id, action = match.groups()
        job = self.jobs.get(request_id)
        if job is None:
            return ex.json(404, {"detail": f"Request {request_id} not found"})
        if action == "/status" and req.method == "GET":
            return self._status(root, request_id, job, ex)
        if action == "/cancel" and req.method == "PUT":
            if job.finished:
                return ex.json(400, {"status": "ALREADY_COMPLETED"})
            job.cancelled = True
            return ex.json(202, {"status": "CANCELLATION_REQUESTED"})
        if action is None and req.method == "GET":
            return self._result(job, ex)
        ex.json(405, {"detail": "Method Not Allowed"})

    def _submit(self, model: str, ex: Exchange) -> None:
        with self._lock:
            plan = self._plans.popleft() if self._plans else Plan()
        request_id = str(uuid.uuid4())
        self.jobs[request_id] = _Job(model, plan)
        ex.json(200, {"status": "IN_QUEUE", "request_id": request_id, "queue_position": 0,
                      **self._urls(_root(model), request_id)})

    def _status(self, root: str, request_id: str, job: _Job, ex: Exchange) -> None:
        steps = job.plan.steps
        body = steps[job.polls] if job.polls < len(steps) else {"status": "COMPLETED", "logs": [],
                                                                 **(job.plan.status_error or {})}
        job.polls += 1
        urls = self._urls(root, request_id)
        ex.json(200, {**body, "response_url": urls["response_url"]})

    def _result(self, job: _Job, ex: Exchange) -> None:
        if not job.finished:
            return ex.json(400, {"detail": "Request is still in progress"})
        if job.plan.failure:
            status, body = job.plan.failure
            return ex.json(status, body, {"x-fal-error-type": body["error_type"]} if "error_type" in body else {})
        ex.json(200, job.plan.output if job.plan.output is not None else self.image_output())

    def _urls(self, root: str, request_id: str) -> dict[str, str]:
        base = f"{self._queue.origin}/{root}/requests/{request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _serve_file(self, req: Received, ex: Exchange) -> None:
        found = self._files.get(req.path)
        if found is None:
            return ex.body(404, b"Not Found", {"content-type": "text/plain"})
        data, content_type = found
        ex.body(200, data, {"content-type": content_type})


def _root(model: str) -> str:
    return "/".join(model.split("/")[:2])
