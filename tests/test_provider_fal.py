"""The fal provider's job queue over httpx against a fake fal queue and CDN on 127.0.0.1."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from providers import build
from providers.base import (
    AuthError,
    BadRequest,
    Config,
    JobProvider,
    Provider,
    RateLimited,
    Request,
    Timeout,
    Unavailable,
)
from providers.fal import FalProvider
from tests.fakes.fal_server import API_KEY, MP4, PNG, FakeFal, Plan, Reply, queued, running

IMAGE_MODEL = "fal-ai/flux/dev"
VIDEO_MODEL = "fal-ai/kling-video/v2.1/master/text-to-video"


@pytest.fixture
def fake():
    with FakeFal() as server:
        yield server


@pytest.fixture
def fal(fake):
    provider = FalProvider(Config(api_key=API_KEY, base_url=fake.base_url, timeout=5,
                                  options={"poll_interval": 0.01}))
    yield provider
    provider.close()


def image(prompt: str = "a lighthouse at dusk", **params) -> Request:
    return Request(kind="image", model=IMAGE_MODEL, prompt=prompt, params=params, timeout=5)


def test_it_is_both_a_provider_and_a_job_provider(fal):
    assert isinstance(fal, Provider) and isinstance(fal, JobProvider)


def test_generate_submits_polls_and_downloads_the_images(fake, fal):
    fake.plan(Plan(steps=[queued(1), running("Loading model")], output=fake.image_output(count=2)))
    result = fal.generate(image(n=2, size="1024x768", input={"seed": 7, "enable_safety_checker": True}))

    submit = fake.received[0]
    assert (submit.method, submit.path) == ("POST", f"/{IMAGE_MODEL}")
    assert submit.header("authorization") == f"Key {API_KEY}"
    assert submit.body == {"prompt": "a lighthouse at dusk", "num_images": 2,
                           "image_size": {"width": 1024, "height": 768}, "seed": 7, "enable_safety_checker": True}
    polls = [r for r in fake.received if r.path.split("?")[0].endswith("/status")]
    assert len(polls) == 3  # queued, running, completed
    # Status and result live under the app's owner/name, without the model's sub-path.
    assert all(r.path.startswith("/fal-ai/flux/requests/") and r.path.endswith("/status?logs=1") for r in polls)
    assert [a.data for a in result.assets] == [PNG + b"\x00", PNG + b"\x01"]
    assert {a.mime for a in result.assets} == {"image/png"}
    assert result.usage.images == 2 and result.usage.seconds == 0
    assert result.model == IMAGE_MODEL and result.vendor_request_id in fake.jobs


def test_the_cdn_never_receives_the_key(fake, fal):
    fal.generate(image())
    assert len(fake.cdn_received) == 1
    assert fake.cdn_received[0].header("authorization") is None


def test_poll_reports_queue_position_then_logs_then_the_result(fake, fal):
    fake.plan(Plan(steps=[queued(2), queued(1), running("Step 1/2"), running("Step 1/2", "Step 2/2")]))
    job = fal.submit(image())
    assert job.id in fake.jobs and job.model == IMAGE_MODEL

    states = [fal.poll(job) for _ in range(5)]
    assert [s.state for s in states] == ["queued", "queued", "running", "running", "done"]
    assert [s.queue_position for s in states[:2]] == [2, 1]
    assert states[2].logs == ("Step 1/2",) and states[3].logs == ("Step 1/2", "Step 2/2")
    done = states[-1]
    assert done.progress == 1.0 and done.result is not None
    assert done.result.assets[0].data == PNG + b"\x00"


def test_video_jobs_report_seconds_as_decimal(fake, fal):
    fake.plan(Plan(steps=[running()], output=fake.video_output(duration="5.04")))
    result = fal.generate(Request(kind="video", model=VIDEO_MODEL, prompt="waves", params={"duration": "5"},
                                  timeout=5))
    assert fake.received[0].body == {"prompt": "waves", "duration": "5"}
    assert fake.received[1].path.startswith("/fal-ai/kling-video/requests/")
    (asset,) = result.assets
    assert asset.data == MP4 and asset.mime == "video/mp4"
    assert result.usage.seconds == Decimal("5.04") and result.usage.images == 0


def test_video_without_a_reported_duration_reports_no_seconds(fake, fal):
    fake.plan(Plan(output=fake.video_output()))
    assert fal.generate(Request(kind="video", model=VIDEO_MODEL, prompt="waves", timeout=5)).usage.seconds == 0


def test_outputs_sent_as_data_uris_are_decoded_without_a_download(fake, fal):
    fake.plan(Plan(output={"images": [{"url": "data:image/jpeg;base64,/9j/4AAQ", "width": 1, "height": 1}]}))
    result = fal.generate(image(input={"sync_mode": True}))
    assert result.assets[0].data == b"\xff\xd8\xff\xe0\x00\x10" and result.assets[0].mime == "image/jpeg"
    assert fake.cdn_received == []


def test_a_job_the_model_refused_fails_with_its_reason(fake, fal):
    refusal = {"detail": [{"loc": ["body", "image_size"], "msg": "Input should be a valid size",
                           "type": "value_error"}]}
    fake.plan(Plan(steps=[running()], failure=(422, refusal)), Plan(failure=(422, refusal)))
    job = fal.submit(image())
    assert fal.poll(job).state == "running"
    failed = fal.poll(job)
    assert failed.state == "failed" and "image_size: Input should be a valid size" in failed.error
    with pytest.raises(BadRequest, match="image_size"):
        fal.generate(image())


def test_an_infrastructure_failure_is_unavailable(fake, fal):
    fake.plan(Plan(failure=(504, {"detail": "Request timed out", "error_type": "request_timeout"})))
    with pytest.raises(Unavailable, match="Request timed out"):
        fal.generate(image())


def test_an_error_in_the_completed_status_fails_the_job(fake, fal):
    fake.plan(Plan(status_error={"error": "Runner disconnected", "error_type": "runner_disconnected"}))
    job = fal.submit(image())
    status = fal.poll(job)
    assert status.state == "failed" and "Runner disconnected" in status.error


def test_cancel_puts_to_the_cancel_url(fake, fal):
    fake.plan(Plan(steps=[queued(3), queued(2)]))
    job = fal.submit(image())
    fal.cancel(job)
    sent = fake.received[-1]
    assert (sent.method, sent.path) == ("PUT", f"/fal-ai/flux/requests/{job.id}/cancel")
    assert sent.header("authorization") == f"Key {API_KEY}"
    assert fake.jobs[job.id].cancelled


def test_cancelling_a_finished_job_says_so(fake, fal):
    job = fal.submit(image())
    assert fal.poll(job).state == "done"
    with pytest.raises(BadRequest, match="already finished, so it was not cancelled and is billed"):
        fal.cancel(job)
    assert not fake.jobs[job.id].cancelled


def test_generate_gives_up_at_the_request_timeout_and_cancels(fake, fal):
    fake.plan(Plan(steps=[running("still going")] * 10_000))
    with pytest.raises(Timeout, match="did not finish within 1 s; it was cancelled"):
        fal.generate(Request(kind="image", model=IMAGE_MODEL, prompt="slow", timeout=1))
    assert fake.received[-1].method == "PUT"
    assert [job.cancelled for job in fake.jobs.values()] == [True]


# --- errors ---------------------------------------------------------------------------------


def test_wrong_key_is_an_auth_error_without_the_key():
    with FakeFal(api_key="right:key") as fake:
        provider = FalProvider(Config(api_key="wrong:key-9876", base_url=fake.base_url))
        with pytest.raises(AuthError) as caught:
            provider.submit(image())
    assert caught.value.status == 401 and "invalid credentials" in str(caught.value)
    assert "wrong:key-9876" not in str(caught.value)


def test_rate_limited_submit_carries_retry_after(fake, fal):
    fake.push(Reply(status=429, body={"detail": "Too many concurrent requests"}, headers={"retry-after": "12"}))
    with pytest.raises(RateLimited) as caught:
        fal.generate(image())
    assert caught.value.retry_after == 12


def test_server_error_while_polling_is_unavailable(fake, fal):
    job = fal.submit(image())
    fake.push(Reply(status=503, body={"detail": "Service temporarily unavailable"}))
    with pytest.raises(Unavailable):
        fal.poll(job)


def test_a_proxy_error_page_on_the_result_is_not_mistaken_for_a_job_failure(fake, fal):
    job = fal.submit(image())
    fake.push(Reply(status=200, body={"status": "COMPLETED", "logs": []}),
              Reply(status=502, raw=b"<html><body>502 Bad Gateway nginx</body></html>"))
    with pytest.raises(Unavailable, match="502 Bad Gateway"):
        fal.poll(job)


def test_a_slow_queue_times_out(fake, fal):
    fake.push(Reply(delay=2))
    with pytest.raises(Timeout):
        fal.submit(Request(kind="image", model=IMAGE_MODEL, prompt="x", timeout=0.2))


def test_media_is_not_streamed_and_text_is_refused(fal):
    with pytest.raises(BadRequest):
        next(iter(fal.stream(image())))
    with pytest.raises(BadRequest):
        fal.submit(Request(kind="text", model=IMAGE_MODEL, prompt="hi"))


def test_health_accepts_a_good_key_and_reports_a_bad_one(fake, fal):
    health = fal.health()
    assert health.ok, health.detail
    assert fake.received[-1].path.endswith("/status")
    with FakeFal(api_key="right:key") as other:
        bad = FalProvider(Config(api_key="wrong:key", base_url=other.base_url)).health()
    assert not bad.ok and "invalid credentials" in bad.detail


def test_models_include_configured_ones(fake):
    provider = FalProvider(Config(api_key=API_KEY, base_url=fake.base_url,
                                  options={"models": [{"id": "fal-ai/recraft/v3", "kind": "image"}]}))
    kinds = {m.id: m.kind for m in provider.models()}
    assert kinds["fal-ai/recraft/v3"] == "image" and kinds[VIDEO_MODEL] == "video"


def test_one_connection_for_the_whole_job_and_the_key_never_leaks(fake, caplog):
    config = Config(api_key=API_KEY, base_url=fake.base_url, options={"poll_interval": 0.01})
    provider = build("fal", config, name="fal-media")
    assert provider.id == "fal-media"
    fake.plan(Plan(steps=[queued(1), running()]))
    fake.push(Reply(status=400, body={"detail": f"Key {API_KEY} cannot use this app"}))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(BadRequest) as caught:
            provider.generate(image())
        provider.generate(image())
    assert fake.connections == 1
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(provider) and API_KEY not in repr(config)
    assert caplog.records and API_KEY not in caplog.text
