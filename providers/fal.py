"""fal's queue API for image and video jobs: submit, poll, fetch the result, cancel.

    POST {queue}/{model_id}                  → {request_id, status_url, response_url, cancel_url}
    GET  status_url?logs=1                   → IN_QUEUE (queue_position) | IN_PROGRESS (logs) | COMPLETED
    GET  response_url                        → the model's output, or the job's error
    PUT  cancel_url                          → 202 CANCELLATION_REQUESTED | 400 ALREADY_COMPLETED

A finished job's files (``images[].url``, ``video.url``) are downloaded into the ``Result``;
those links point at fal's CDN, which never receives the key. ``generate`` submits and polls
every ``options["poll_interval"]`` seconds (default 1) until done, cancelling the job and
raising ``Timeout`` when the request's time is up. Usage: ``images`` is the number of images
returned and ``seconds`` the video's duration when the model reports one.
"""

from __future__ import annotations

import base64
import mimetypes
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from providers._http import VendorError, VendorHTTP, json_body, path_segment
from providers.base import (
    Asset,
    AuthError,
    BadRequest,
    Cancelled,
    Chunk,
    Config,
    Health,
    Job,
    JobStatus,
    ModelInfo,
    ProviderError,
    RateLimited,
    Request,
    Result,
    Timeout,
    Unavailable,
    Usage,
)

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_POLL_INTERVAL = 1.0

MODELS = (
    ModelInfo("fal-ai/flux/schnell", "image"),
    ModelInfo("fal-ai/flux/dev", "image"),
    ModelInfo("fal-ai/flux-pro/v1.1", "image"),
    ModelInfo("fal-ai/veo3", "video"),
    ModelInfo("fal-ai/kling-video/v2.1/master/text-to-video", "video"),
)


class FalProvider:
    """A fal API key; image and video models through the queue.

    ``options["models"]`` adds models to the list as ``[{"id": …, "kind": "image"|"video"}]``;
    ``params["input"]`` carries a model's own input fields, sent as given.
    """

    kinds = frozenset({"image", "video"})

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or "fal"
        self._http = VendorHTTP(provider=self.id, label="fal", config=config,
                                default_base_url=DEFAULT_BASE_URL, auth_header="authorization",
                                auth_prefix="Key ", describe=_describe)
        self.poll_interval = float(config.options.get("poll_interval", DEFAULT_POLL_INTERVAL))
        self._extra_models = tuple(ModelInfo(str(m["id"]), m.get("kind", "image"))
                                   for m in config.options.get("models", ()))

    def __repr__(self) -> str:
        return f"<FalProvider id={self.id!r} base_url={self._http.base_url!r}>"

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[ModelInfo]:
        return [*MODELS, *self._extra_models]

    def health(self) -> Health:
        """An authenticated status read of a request that does not exist.

        The queue has no cheaper authenticated read: fal answers 401/403 to a bad key and
        404 to a good one, so a 404 is a healthy answer.
        """
        probe = f"{_app_root(self.models()[0].id)}/requests/{uuid.uuid4()}/status"
        return self._http.health(probe, also_ok=(404,))

    # --- the job protocol -------------------------------------------------------------------

    def submit(self, req: Request) -> Job:
        if req.kind not in self.kinds:
            raise BadRequest(f"fal here makes images and videos, not {req.kind}.", provider=self.id)
        response = self._http.request("POST", path_segment(req.model), json=_input(req),
                                      timeout=min(req.timeout, self._http.timeout))
        data = _object(response, self._http)
        request_id = str(data.get("request_id") or "")
        if not request_id:
            raise Unavailable("fal accepted the job but sent no request id.", provider=self.id)
        # fal hands out the URLs to use; built from the model id only if it ever leaves them out.
        root = f"{self._http.base_url}/{path_segment(_app_root(req.model))}/requests/{request_id}"
        return Job(id=request_id, model=req.model,
                   status_url=data.get("status_url") or f"{root}/status",
                   result_url=data.get("response_url") or root,
                   cancel_url=data.get("cancel_url") or f"{root}/cancel")

    def poll(self, job: Job, *, timeout: float | None = None) -> JobStatus:
        return self._poll(job, timeout)[0]

    def cancel(self, job: Job) -> None:
        """Asks fal to cancel; raises BadRequest when the job had already finished (and is billed)."""
        response = self._http.request("PUT", job.cancel_url or "", check=False)
        if response.status_code < 300:
            return
        body = json_body(response)
        state = body.get("status") if isinstance(body, dict) else None
        if state == "ALREADY_COMPLETED":
            raise BadRequest(f"The fal job {job.id} had already finished, so it was not cancelled "
                             "and is billed; poll it for the result.", provider=self.id,
                             status=response.status_code)
        if state == "NOT_FOUND" or response.status_code == 404:
            raise BadRequest(f"fal has no job {job.id} to cancel.", provider=self.id,
                             status=response.status_code)
        raise self._http.error(response)

    # --- one call for callers that only want the result -------------------------------------

    def generate(self, req: Request) -> Result:
        deadline = time.monotonic() + req.timeout
        job = self.submit(req)
        while True:
            remaining = deadline - time.monotonic()
            status, error = self._poll(job, max(remaining, 0.1))
            if status.state == "done" and status.result is not None:
                return status.result
            if status.state == "failed":
                raise error or Unavailable(status.error or "The fal job failed.", provider=self.id)
            if status.state == "cancelled":
                raise Cancelled(f"The fal job {job.id} was cancelled.", provider=self.id)
            if time.monotonic() + self.poll_interval >= deadline:
                raise Timeout(f"The fal job {job.id} did not finish within {req.timeout:g} s; "
                              f"{self._give_up(job)}", provider=self.id)
            time.sleep(self.poll_interval)

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        raise BadRequest("Images and videos are not streamed; use generate() or submit() and poll().",
                         provider=self.id)

    # --- internals --------------------------------------------------------------------------

    def _poll(self, job: Job, timeout: float | None = None) -> tuple[JobStatus, ProviderError | None]:
        """The job's state, and for a failed job the typed error ``generate`` raises."""
        response = self._http.request("GET", job.status_url or "", params={"logs": "1"}, timeout=timeout)
        data = _object(response, self._http)
        state = data.get("status")
        logs = tuple(str(entry.get("message", "")) for entry in data.get("logs") or []
                     if isinstance(entry, dict))
        if state == "IN_QUEUE":
            return JobStatus("queued", queue_position=data.get("queue_position"), logs=logs), None
        if state == "IN_PROGRESS":
            return JobStatus("running", logs=logs), None
        if state in ("CANCELLED", "CANCELED"):
            return JobStatus("cancelled", logs=logs), None
        if state == "COMPLETED" and not data.get("error"):
            return self._outcome(job, logs, timeout)
        if state in ("COMPLETED", "FAILED"):
            said = VendorError(str(data.get("error") or "the job failed"))
            error = self._http.error_for(_error_status(data.get("error_type")), said)
            return JobStatus("failed", error=str(error), logs=logs), error
        raise Unavailable(f"fal reported a job status it does not document: {state!r}.", provider=self.id)

    def _outcome(self, job: Job, logs: tuple[str, ...],
                 timeout: float | None) -> tuple[JobStatus, ProviderError | None]:
        response = self._http.request("GET", job.result_url or "", check=False, timeout=timeout)
        if response.status_code >= 300:
            error = self._http.error(response)
            # A stored job error has fal's JSON detail; a bad key, a rate limit or a proxy's
            # page does not, and says nothing about the job.
            if isinstance(error, (AuthError, RateLimited)) or not _has_detail(response):
                raise error
            return JobStatus("failed", error=str(error), logs=logs), error
        output = _object(response, self._http)
        images = [f for f in output.get("images") or [] if isinstance(f, dict)]
        if not images and isinstance(output.get("image"), dict):
            images = [output["image"]]
        files = [*images, *([output["video"]] if isinstance(output.get("video"), dict) else [])]
        assets = tuple(self._download(f, timeout) for f in files)
        usage = Usage(images=len(images), seconds=_duration(output))
        result = Result(assets=assets, usage=usage, model=job.model, finish_reason="stop",
                        vendor_request_id=job.id)
        return JobStatus("done", progress=1.0, result=result, logs=logs), None

    def _download(self, file: dict[str, Any], timeout: float | None) -> Asset:
        url = str(file.get("url") or "")
        if url.startswith("data:"):  # models run with sync_mode answer with data URIs
            header, _, payload = url.partition(",")
            mime = header[5:].split(";")[0] or "application/octet-stream"
            return Asset(data=base64.b64decode(payload), mime=str(file.get("content_type") or mime))
        response = self._http.request("GET", url, timeout=timeout)
        mime = (file.get("content_type") or response.headers.get("content-type", "").split(";")[0]
                or mimetypes.guess_type(url)[0] or "application/octet-stream")
        return Asset(data=response.content, mime=str(mime))

    def _give_up(self, job: Job) -> str:
        try:
            self.cancel(job)
        except ProviderError as exc:
            return f"cancelling it failed too ({exc})."
        return "it was cancelled."


def _input(req: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": req.prompt or req.prompt_text()}
    params = req.params
    if req.kind == "image":
        if params.get("n") is not None:
            body["num_images"] = int(params["n"])
        size = params.get("size")
        if isinstance(size, str) and "x" in size and size.replace("x", "", 1).isdigit():
            width, height = size.split("x")
            body["image_size"] = {"width": int(width), "height": int(height)}
        elif size:
            body["image_size"] = size  # one of fal's named sizes, such as "landscape_4_3"
    elif params.get("duration") is not None:
        body["duration"] = params["duration"]
    body.update(params.get("input") or {})
    return body


def _app_root(model: str) -> str:
    """Status and result URLs use the app's owner/name, without an endpoint sub-path."""
    return "/".join(model.split("/")[:2])


def _duration(output: dict[str, Any]) -> Decimal:
    video = output.get("video") if isinstance(output.get("video"), dict) else {}
    value = video.get("duration", output.get("duration"))
    if value is None:
        return Decimal(0)
    try:
        return Decimal(str(value).strip().removesuffix("s"))
    except InvalidOperation:
        return Decimal(0)


def _error_status(error_type: Any) -> int:
    """fal marks infrastructure failures (timeouts, lost runners) with an error_type; a job
    without one failed because the model refused its input."""
    return 503 if error_type else 422


def _object(response: httpx.Response, http: VendorHTTP) -> dict[str, Any]:
    body = json_body(response)
    if not isinstance(body, dict):
        raise Unavailable("fal answered with something other than a JSON object.", provider=http.provider)
    return body


def _has_detail(response: httpx.Response) -> bool:
    body = json_body(response)
    return isinstance(body, dict) and "detail" in body


def _describe(response: httpx.Response) -> VendorError:
    """fal errors: {"detail": "…", "error_type": …} or a list of {loc, msg, type} field errors."""
    body = json_body(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        message = "; ".join(
            f"{'.'.join(str(p) for p in (d.get('loc') or [])[1:])}: {d.get('msg', '')}".lstrip(": ")
            for d in detail if isinstance(d, dict))
    elif detail:
        message = str(detail)
    else:
        message = response.text[:300] or response.reason_phrase
    return VendorError(message=message)
