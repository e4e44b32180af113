"""email and webhook nodes: messages out through ``engine/notify.py`` (SMTP, Slack-compatible webhooks)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine import notify
from engine.errors import InvalidInput
from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class EmailParams(Params):
    to: list[str] | str
    subject: str = Field(min_length=1, max_length=300)
    body: str


class WebhookParams(Params):
    url: str
    text: str
    extra: dict[str, Any] = Field(default_factory=dict)


def _recipients(to: list[str] | str) -> list[str]:
    items = [t.strip() for t in (to.split(",") if isinstance(to, str) else to) if t and t.strip()]
    bad = [t for t in items if "@" not in t or " " in t]
    if not items or bad:
        raise NodeFailed(f"Give one or more email addresses; {', '.join(bad) or 'none'} is not one.", retry=False)
    return items


def run_email(ctx: NodeContext, p: EmailParams) -> NodeResult:
    to = _recipients(p.to)
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "to": to, "subject": p.subject})
    try:
        notify.send_email(to, p.subject, p.body)
    except notify.DeliveryFailed as exc:
        raise NodeFailed(str(exc)) from None
    return NodeResult({"sent_to": to, "subject": p.subject}, logs=f"email sent to {len(to)} recipient(s)")


def run_webhook(ctx: NodeContext, p: WebhookParams) -> NodeResult:
    try:
        url = notify.check_webhook_url(p.url)
    except InvalidInput as exc:
        raise NodeFailed(str(exc), retry=False) from None
    hint = notify.webhook_hint(url)
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "webhook": hint})
    try:
        notify.post_webhook(url, p.text, extra=p.extra)
    except notify.DeliveryFailed as exc:
        raise NodeFailed(str(exc)) from None
    return NodeResult({"posted_to": hint}, logs=f"posted to {hint}")


register(NodeType("email", EmailParams, run_email, side_effects=True, summary="send an email"))
register(NodeType("webhook", WebhookParams, run_webhook, side_effects=True,
                  summary="post a Slack-compatible webhook"))
