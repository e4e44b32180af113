"""Generate: one prompt to one model, with its cost estimate before it runs and its real cost after.

Every call goes through ``engine.generation`` (priced, budgeted, in the ledger). Text streams as
it arrives; images and videos run as jobs polled once a second, with a cancel button while
the vendor allows it; speech comes back as an audio file. Results are kept as assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import streamlit as st

from engine import asset_library, assets, connections, generation, local_servers, media_jobs, projects, provider_health
from engine.config import get_settings
from engine.errors import MeterbookError
from engine.generation import DEFAULT_MAX_TOKENS, Generation, GenerationRequest
from engine.media_jobs import MediaJob
from engine.local_servers import LocalServer
from engine.router import NoRoute
from pages import _common as ui

KINDS = {"text": "Text", "image": "Image", "speech": "Speech", "video": "Video"}
PROMPT_LABELS = {"text": "Prompt", "image": "Describe the image", "speech": "Text to speak",
                 "video": "Describe the video"}
AUTO = "auto"  # the workspace's route decides
NO_PROJECT = 0
IMAGE_SIZES = ["1024x1024", "1536x1024", "1024x1536"]
IMAGE_QUALITY = {"": "Model default", "low": "Low", "medium": "Medium", "high": "High"}
VOICES = {"JBFqnCBsd6RMkjVDRZzb": "George", "21m00Tcm4TlvDq8ikWAM": "Rachel"}  # premade on every account
PROBE_CACHE_SECONDS = 10
FINISHED = ("done", "failed", "cancelled")

actor = ui.actor()


@dataclass
class Outcome:
    """What the last run left to show: a result, or the reason it failed."""

    kind: str
    generation: Generation | None = None
    text: str = ""
    asset_ids: tuple[int, ...] = ()
    error: str | None = None
    retry: bool = False  # the provider failed (worth another go), rather than the request being refused
    notes: list[str] = field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------


def money(value: Decimal | None) -> str:
    """Dollars to the cent; a fraction of a cent, which most calls cost, exactly as priced."""
    if value is None:
        return "unpriced"
    if value == 0 or abs(value) >= Decimal("0.01"):
        return ui.usd(value)
    return f"${value.normalize():f}"


@st.cache_data(ttl=PROBE_CACHE_SECONDS, show_spinner=False)
def local_ollama(url: str) -> LocalServer | None:
    return local_servers.probe(url, name="Ollama")


def price_text(prices: provider_health.UnitPrices | None, kind: str) -> str:
    if prices is None:
        return "unpriced"
    unit = {"image": prices.per_image, "speech": prices.per_1k_characters, "video": prices.per_second}.get(kind)
    per = {"image": "image", "speech": "1k characters", "video": "second"}.get(kind)
    if unit:
        return f"${unit:,f} per {per}"
    if prices.input_mtok or prices.output_mtok:
        return f"${prices.input_mtok:,f} in / ${prices.output_mtok:,f} out per M tokens"
    return "free"


def without_models() -> None:
    """Nothing to generate with: say why, and point at what would fix it."""
    listed = connections.list_connections(actor)
    if not listed:
        st.info("No provider keys yet, so there is nothing to generate with. Add an API key (OpenAI, Anthropic, "
                "Gemini, ElevenLabs, fal) or an OpenAI-compatible server under Providers.", icon=":material/key_off:")
    else:
        st.info("No model is routed yet: a provider is connected, but no enabled model is set up to take calls. "
                "Route one (or enable one) under Providers → Routing.", icon=":material/alt_route:")
    st.page_link("pages/providers.py", label="Go to Providers", icon=":material/hub:")
    server = local_ollama(get_settings().ollama_url)
    if server is None or any(c.base_url == server.base_url for c in listed):
        return
    models = local_servers.chat_models(server)
    with st.container(border=True):
        st.markdown(f":material/dns: **Ollama is running** at {server.base_url} with {len(models)} chat "
                    f"model{'s' if len(models) != 1 else ''}. Add it to generate with local models.")
        if ui.allowed("provider.write") and ui.allowed("route.write"):
            if st.button("Add local Ollama", icon=":material/add:", key="gen_add_ollama"):
                if added := ui.attempt(lambda: local_servers.add_ollama(actor)):
                    ui.flash(f"Added {added[0].name} with {len(added[1])} model{'s' if len(added[1]) != 1 else ''}.")
                    st.rerun()
        else:
            st.caption("Ask an admin to add it under Providers.")


def tags_of(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def usage_text(g: Generation) -> str:
    u = g.usage
    parts = []
    if u.input_tokens or u.output_tokens:
        parts.append(f"{u.input_tokens:,} in / {u.output_tokens:,} out tokens")
    if u.images:
        parts.append(f"{u.images} image{'s' if u.images != 1 else ''}")
    if u.characters:
        parts.append(f"{u.characters:,} characters")
    if u.seconds:
        parts.append(f"{u.seconds} s of video")
    return ", ".join(parts) or "—"


def show_outcome(o: Outcome) -> None:
    if o.error is not None:
        st.error(o.error, icon=":material/error:")
        if not o.retry:  # a refused request: shown once, then the next edit clears it
            st.session_state.pop("gen_outcome", None)
        else:
            st.button("Retry", icon=":material/refresh:", key="gen_retry",
                      on_click=lambda: st.session_state.update(gen_retry_now=True))
        return
    g = o.generation
    if g is None:
        return
    with st.container(border=True):
        if o.kind == "text":
            st.markdown(o.text)
        for asset_id in o.asset_ids:
            found = ui.attempt(lambda: (asset_library.get_asset(actor, asset_id),
                                        asset_library.read_content(actor, asset_id)))
            if found is None:
                continue
            view, data = found
            if view.mime.startswith("image/"):
                try:
                    st.image(data)
                except OSError:  # bytes the image library cannot read: still downloadable below
                    st.caption("This image cannot be previewed here; download it to open it.")
            elif view.mime.startswith("audio/"):
                st.audio(data, format=view.mime)
            elif view.mime.startswith("video/"):
                st.video(data, format=view.mime)
            st.download_button("Download", data, file_name=view.file_name, mime=view.mime,
                               icon=":material/download:", key=f"gen_download_{asset_id}")
    cost, latency = st.columns(2)
    cost.metric("Cost", money(g.cost), help="What the provider's reported usage costs at this workspace's prices."
                + ("" if g.cost is not None else " No price is known for this model, so it was recorded unpriced."))
    latency.metric("Latency", f"{g.latency_ms:,} ms",
                   help=f"First words after {g.ttft_ms:,} ms." if g.ttft_ms is not None else None)
    attempts = f" after {g.attempts} attempts" if g.attempts > 1 else ""
    st.caption(f"{usage_text(g)} · {g.target}{attempts}")
    saved = f"Saved as asset {', '.join(f'#{i}' for i in o.asset_ids)}. " if o.asset_ids else ""
    estimated = ("No price was known before running" if g.estimated_cost is None
                 else f"Estimated at most {money(g.estimated_cost)} before running")
    st.caption(f"{saved}{estimated} · request {g.request_id}")
    for note in o.notes:
        st.caption(note)


@st.fragment(run_every=1)
def job_progress() -> None:
    """Polls the running media job once a second; the whole page reruns when it ends."""
    job: MediaJob | None = st.session_state.get("gen_job")
    if job is None:
        return
    status = job.poll()
    if status.state in FINISHED:
        finish_job(job)
        st.rerun(scope="app")
    if status.state == "queued":
        place = f", position {status.queue_position + 1} in the queue" if status.queue_position is not None else ""
        text = f"Waiting for {job.target}{place}…"
    else:
        text = f"{job.target} is working on it…"
    st.progress(status.progress if status.progress is not None else 0.0, text=text)
    for line in status.logs[-3:]:
        st.caption(line)
    if job.cancellable and st.button("Cancel", icon=":material/cancel:", key="gen_cancel"):
        ui.attempt(job.cancel)
        if job.state in FINISHED:  # cancelled, or it had finished first and was kept
            finish_job(job)
            st.rerun(scope="app")


def finish_job(job: MediaJob) -> None:
    st.session_state.pop("gen_job", None)
    kind = st.session_state.get("gen_job_kind", "image")
    if job.result is not None:
        st.session_state["gen_outcome"] = Outcome(kind, job.result, asset_ids=job.result.asset_ids)
    elif job.state == "cancelled":
        st.session_state["gen_outcome"] = Outcome(kind, error="You cancelled the job before it finished; "
                                                              "nothing was charged.", retry=True)
    else:
        st.session_state["gen_outcome"] = Outcome(kind, error=f"The {kind} job failed. {job.target} said: {job.error}",
                                                  retry=True)


def run(req: GenerationRequest, result_area) -> None:
    """Make the call; what it leaves is shown by the rerun that follows."""
    st.session_state.pop("gen_outcome", None)
    try:
        if req.kind == "text":
            answer = generation.stream(req, actor)
            with result_area:
                st.write_stream(answer)
            g = answer.result
            outcome = Outcome("text", g, text=g.text)
            try:
                outcome.asset_ids = (assets.save_text(actor, g.ledger_id, outcome.text, req.prompt),)
            except MeterbookError as exc:
                outcome.notes.append(f"The answer was not saved as an asset: {exc}")
        elif req.kind == "speech":
            with result_area, st.spinner("Speaking…"):
                g = generation.generate(req, actor)
            outcome = Outcome("speech", g, asset_ids=g.asset_ids)
        else:
            st.session_state["gen_job"] = media_jobs.submit(req, actor)
            st.session_state["gen_job_kind"] = req.kind
            st.rerun()
    except MeterbookError as exc:
        outcome = Outcome(req.kind, error=str(exc), retry=isinstance(exc, NoRoute))
    st.session_state["gen_outcome"] = outcome
    st.rerun()


# --- layout -------------------------------------------------------------------------------

st.title("Generate")
ui.show_flash()

offered = {kind: provider_health.targets(actor, kind) for kind in KINDS}
available = [kind for kind, targets in offered.items() if targets]
if not available:
    without_models()
    st.stop()
if not ui.allowed("generate"):
    st.info(f"Your role ({ui.role()}) can see what is set up but cannot run AI calls, which spend money. "
            "Ask an admin for the editor role.", icon=":material/lock:")
    st.stop()

kind_col, model_col = st.columns([2, 3], gap="large")
kind = kind_col.radio("What to make", available, horizontal=True, format_func=KINDS.get, key="gen_kind")
targets = {t.label: t for t in offered[kind]}
with model_col:
    target = st.selectbox(
        "Model", [AUTO, *targets], key=f"gen_target_{kind}",
        format_func=lambda t: ("Automatic: the workspace's route" if t == AUTO else
                               f"{t} · {targets[t].health} · {price_text(targets[t].prices, kind)}"),
        help="Automatic follows the route set under Providers and falls back down it when a model fails; "
             "a chosen model is tried first.",
    )
    chosen = targets.get(target)
    if chosen is None:
        st.caption("The route picks the model (the estimate names it): " + ", ".join(targets))
    else:
        health = [chosen.health, price_text(chosen.prices, kind)]
        if chosen.view.latency_ms is not None:
            health.append(f"~{chosen.view.latency_ms:,} ms")
        if chosen.view.last_error and chosen.view.consecutive_failures:
            health.append(f"last error: {chosen.view.last_error}")
        st.caption(" · ".join(health))

main, side = st.columns([3, 2], gap="large")
with side:
    params: dict = {}
    system = temperature = max_tokens = None
    too_long = None
    if kind == "text":
        system = st.text_area("System prompt (optional)", key="gen_system", height=90) or None
        left, right = st.columns(2)
        temperature = left.number_input("Temperature", min_value=0.0, max_value=2.0, value=None, step=0.1,
                                        placeholder="default", key="gen_temperature")
        max_tokens = right.number_input("Max tokens", min_value=1, value=None, step=256, key="gen_max_tokens",
                                        placeholder=f"{DEFAULT_MAX_TOKENS:,}",
                                        help="The longest answer to allow. The estimate counts it in full.")
        # Automatic can fall back to a larger model: only the largest window known for all of them binds.
        windows = [t.view.context_window for t in ([chosen] if chosen else targets.values())]
        window = max(windows) if all(windows) else None
        if max_tokens and window and max_tokens > window:
            whose = f"{chosen.label}'s context window" if chosen else "the largest context window in the route"
            too_long = (f"Max tokens ({max_tokens:,}) is above {whose} ({window:,} tokens). Lower it, or choose a "
                        "model with a larger window.")
            st.error(too_long, icon=":material/error:")
    elif kind == "image":
        left, right = st.columns(2)
        params["size"] = left.selectbox("Size", IMAGE_SIZES, key="gen_size")
        quality = right.selectbox("Quality", list(IMAGE_QUALITY), format_func=IMAGE_QUALITY.get, key="gen_quality")
        if quality:
            params["quality"] = quality
        params["n"] = st.number_input("Images", min_value=1, max_value=4, value=1, key="gen_n")
    elif kind == "speech":
        left, right = st.columns(2)
        voice = left.selectbox("Voice", list(VOICES), format_func=VOICES.get, key="gen_voice")
        typed = right.text_input("…or a voice id", key="gen_voice_id", placeholder="From your voice library")
        params["voice"] = typed.strip() or voice
    else:
        params["duration"] = st.number_input("Length (seconds)", min_value=1, max_value=60, value=5,
                                             key="gen_duration")

    project_names = projects.project_choices(actor)
    project_id = st.selectbox("Charge to project", [NO_PROJECT, *project_names], key="gen_project",
                              format_func=lambda p: "No project" if p == NO_PROJECT else project_names[p])
    tags = st.text_input("Tags", key="gen_tags", placeholder="Comma-separated, e.g. campaign, draft")

with main:
    prompt = st.text_area(PROMPT_LABELS[kind], key="gen_prompt", height=240,
                          placeholder="Write here, then press Ctrl+Enter to update the estimate.")
    req = GenerationRequest(
        kind=kind, prompt=prompt, system=system, target=None if target == AUTO else target,
        max_tokens=int(max_tokens) if max_tokens else None,
        temperature=float(temperature) if temperature is not None else None, params=params,
        project_id=project_id or None, tags=tags_of(tags),
    )
    if not prompt.strip():
        st.caption("Write a prompt to see what the call will cost before you run it.")
    elif too_long is None and (est := ui.attempt(lambda: generation.estimate(req, actor))) is not None:
        if kind == "text":
            counted = f"{est.input_tokens:,} prompt tokens" + ("" if est.exact else " (approximate count)")
            detail = f"{counted} + up to {est.max_output_tokens:,} answer tokens on {est.target}"
        else:
            detail = f"on {est.target}"
        if est.cost is None:
            st.markdown(f"**Estimated cost: unpriced.** No price is known for {est.target}, so the call will be "
                        "recorded without a cost; set one under Settings → Prices.")
        else:
            st.markdown(f"**Estimated cost: at most {money(est.cost)}**")
        st.caption(detail)

    busy = "gen_job" in st.session_state
    clicked = st.button("Generate", type="primary", icon=":material/auto_awesome:", key="gen_run",
                        disabled=busy or too_long is not None)
    result_area = st.container()
    if (clicked or st.session_state.pop("gen_retry_now", False)) and not busy:
        run(req, result_area)
    if busy:
        with result_area:
            job_progress()
    elif (outcome := st.session_state.get("gen_outcome")) is not None and outcome.kind == kind:
        with result_area:
            show_outcome(outcome)
