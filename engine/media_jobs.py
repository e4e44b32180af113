"""Image and video calls that take a while: submitted through the generation path, then polled or cancelled.

They share everything with ``engine.generation`` up to the vendor call (plan, reservation,
routing, the recording of an attempt); only the waiting differs, so it lives here.
"""

from __future__ import annotations

import threading
import time

from engine import generation, guards, router
from engine.errors import InvalidInput
from engine.permissions import Actor
from providers.base import BadRequest, Job, JobProvider, JobStatus, ProviderError, Result, Unavailable, Usage



class MediaJob:
    """An image or video call that takes a while: poll it for progress, cancel it, read ``result``.

    On a vendor with a job queue (``JobProvider``) the job is submitted, polled and cancellable;
    elsewhere the call runs in a thread and can only be waited for. Either way it is recorded
    once, when it ends: done, failed, or cancelled before it was billed. ``watch`` keeps polling
    from a thread of this process, so a job whose page was closed is still recorded.
    """

    TERMINAL = ("done", "failed", "cancelled")

    def __init__(self, attempt: generation._Attempt, job: Job | None = None, runner: threading.Thread | None = None):
        self._attempt = attempt
        self._job = job
        self._runner = runner
        self._outcome: Result | ProviderError | None = None
        self._lock = threading.RLock()  # the page and the watcher may poll at once
        self._last: JobStatus | None = None
        self._polled_at = time.monotonic()
        self.result: generation.Generation | None = None
        self.error: str | None = None
        self.state: str = "queued" if job else "running"

    def watch(self, every: float, idle: float) -> None:
        """Poll from a thread whenever nobody else has for ``idle`` seconds, until the job ends."""

        def run() -> None:
            while self.state not in self.TERMINAL:
                time.sleep(every)
                if time.monotonic() - self._polled_at >= idle:
                    self.poll()

        threading.Thread(target=run, name=f"watch-{self._attempt.plan.request_id}", daemon=True).start()

    @property
    def cancellable(self) -> bool:
        return self._job is not None and self.state in ("queued", "running")

    @property
    def target(self) -> str:
        return self._attempt.target.label

    def poll(self) -> JobStatus:
        with self._lock:
            self._polled_at = time.monotonic()
            self._last = self._poll()
            return self._last

    def _poll(self) -> JobStatus:
        if self.state in self.TERMINAL:
            return JobStatus(self.state, 1.0 if self.state == "done" else None, error=self.error)
        if self._job is not None:
            try:
                status = self._attempt.provider.poll(self._job)
            except ProviderError as exc:
                self._end_failed(exc)
                return JobStatus("failed", error=self.error)
            if status.state == "done" and status.result is not None:
                self.result, self.state = self._attempt.finish(status.result), "done"
            elif status.state == "failed":
                self._end_failed(BadRequest(status.error or "the job failed", status=200))
            else:
                self.state = status.state
            return status
        if self._runner is not None and self._runner.is_alive():
            return JobStatus("running")
        if isinstance(self._outcome, Result):
            self.result, self.state = self._attempt.finish(self._outcome), "done"
            return JobStatus("done", 1.0, result=self._outcome)
        self._end_failed(self._outcome if isinstance(self._outcome, ProviderError)
                         else Unavailable("the call stopped without an answer"))
        return JobStatus("failed", error=self.error)

    def _end_failed(self, exc: ProviderError) -> None:
        self.state, self.error = "failed", str(exc) or type(exc).__name__
        self._attempt.failed(exc)

    def cancel(self) -> None:
        """Cancel a queued or running job; a job the vendor already finished is kept and billed."""
        with self._lock:
            self._cancel()

    def _cancel(self) -> None:
        if not self.cancellable:
            raise InvalidInput("This job can no longer be cancelled.")
        try:
            self._attempt.provider.cancel(self._job)
        except BadRequest:
            self.poll()  # it finished first: record what it made
            raise InvalidInput("The job had already finished, so it was kept (and billed).") from None
        self.state = "cancelled"
        self._attempt.record(Usage(), status="cancelled", error="cancelled by the user")

    def wait(self, interval: float = 1.0, timeout: float | None = None) -> generation.Generation:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll().state not in ("done", "failed", "cancelled"):
            if deadline is not None and time.monotonic() > deadline:
                raise InvalidInput("The job is still running; check on it again later.")
            time.sleep(interval)
        if self.result is None:
            raise router.NoRoute(f"The {self._attempt.plan.req.kind} job failed: {self.error}",
                                 [(self.target, self.error or "")])
        return self.result


def submit(req: generation.GenerationRequest, actor: Actor, *, watch_every: float | None = 2.0,
           watch_idle: float = 30.0) -> MediaJob:
    """Start an image or video call and return at once; falls back between targets while submitting.

    Unless ``watch_every`` is None, a thread takes over polling whenever the caller has not polled
    for ``watch_idle`` seconds (the page was closed), so the job is recorded when it ends.
    """
    if req.kind not in ("image", "video"):
        raise InvalidInput("Only image and video calls run as jobs; use generate() or stream() for the rest.")
    plan = generation._plan(req, actor)

    def attempt(target: router.Target, number: int) -> MediaJob:
        a = generation._begin(plan, target, number)
        preq = generation._provider_request(plan.req, target.model, plan.max_tokens, plan.request_id)
        if isinstance(a.provider, JobProvider):
            try:
                return MediaJob(a, job=a.provider.submit(preq))
            except ProviderError as exc:
                a.failed(exc)
                raise
            except BaseException:
                guards.budgets.release(a.hold)
                raise
        job = MediaJob(a)

        def run() -> None:
            try:
                job._outcome = a.provider.generate(preq)
            except ProviderError as exc:
                job._outcome = exc

        job._runner = threading.Thread(target=run, name=f"media-{plan.request_id}", daemon=True)
        job._runner.start()
        return job

    job = router.Router(plan.policy, plan.health).run(plan.targets, attempt)
    if watch_every is not None:
        job.watch(watch_every, watch_idle)
    return job
