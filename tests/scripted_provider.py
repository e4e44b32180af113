"""A provider of our own protocol whose answers a test scripts, for testing the engine around providers.

It stands where a vendor module would (registered as provider type "scripted"), so the
generation path, router, ledger and budget hook run for real; the vendor modules themselves
are tested through their SDKs against wire-level fakes in their own test files.
"""

from __future__ import annotations

from collections.abc import Iterator

import providers
from providers.base import Asset, Chunk, Config, Health, ModelInfo, ProviderError, Request, Result, Usage

# model → outcomes, taken one per call (the last one repeats): a Result, a ProviderError,
# or for streams a list of str / Result / ProviderError items.
SCRIPT: dict[str, list] = {}
CALLS: list[Request] = []


class ScriptedProvider:
    kinds = frozenset({"text", "image", "speech"})

    def __init__(self, config: Config, *, name: str | None = None):
        self.id = name or "scripted"
        self.config = config

    def _next(self, req: Request):
        CALLS.append(req)
        queue = SCRIPT.get(req.model) or [Result(text="ok", usage=Usage(input_tokens=10, output_tokens=2))]
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(m, "text") for m in SCRIPT]

    def generate(self, req: Request) -> Result:
        outcome = self._next(req)
        assert isinstance(outcome, Result), "script a Result for generate()"
        return outcome

    def stream(self, req: Request) -> Iterator[Chunk | Result]:
        outcome = self._next(req)
        for item in outcome if isinstance(outcome, list) else [outcome]:
            if isinstance(item, ProviderError):
                raise item
            yield Chunk(item) if isinstance(item, str) else item

    def health(self) -> Health:
        return Health(ok=True)


def install() -> None:
    providers.TYPES["scripted"] = "tests.scripted_provider:ScriptedProvider"
    providers.TYPES["scripted-jobs"] = "tests.scripted_provider:ScriptedJobProvider"
    for registry in (SCRIPT, CALLS, JOBS, CANCELLED):
        registry.clear()


def image(n: int = 1) -> Result:
    return Result(assets=tuple(Asset(b"\x89PNG fake image %d" % i, "image/png") for i in range(n)), usage=Usage(images=n))


# model → the JobStatus each poll returns in turn (the last repeats); CANCELLED: job ids cancelled
JOBS: dict[str, list] = {}
CANCELLED: list[str] = []


class ScriptedJobProvider(ScriptedProvider):
    """The same, with a job queue: submit, poll through ``JOBS``, cancel."""

    kinds = frozenset({"image", "video"})

    def submit(self, req: Request):
        from providers.base import Job

        CALLS.append(req)
        return Job(id=f"job-{len(CALLS)}", model=req.model)

    def poll(self, job):
        queue = JOBS[job.model]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def cancel(self, job) -> None:
        from providers.base import BadRequest, JobStatus

        if JOBS[job.model][0].state == "done":
            raise BadRequest("the job had already completed")
        CANCELLED.append(job.id)
        JOBS[job.model] = [JobStatus("cancelled")]
