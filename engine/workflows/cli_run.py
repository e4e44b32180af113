"""``python -m engine run <workflow> [--input k=v]``: trigger a workflow and run it in this process."""

from __future__ import annotations

import json
import os
import threading

from sqlalchemy import select

from engine import db
from engine.errors import InvalidInput, NotFound
from engine.models import Membership, User, Workspace
from engine.permissions import Actor


def actor_for(workspace: str | None, email: str | None) -> Actor:
    """Who the run acts as: the named member (default: the workspace's first owner) of the named
    workspace (default: the only one)."""
    with db.read_session() as s:
        q = select(Workspace)
        if workspace:
            named = Workspace.name == workspace
            q = q.where(named | (Workspace.id == int(workspace)) if workspace.isdigit() else named)
        found = s.scalars(q.order_by(Workspace.id)).all()
        if not found:
            raise NotFound(f"No workspace {workspace!r}." if workspace else "There is no workspace yet; run "
                           "python -m engine demo-data or sign up first.")
        if len(found) > 1 and not workspace:
            raise InvalidInput("There are several workspaces; name one with --workspace.")
        ws = found[0]
        q = select(Membership).join(User).where(Membership.workspace_id == ws.id)
        q = q.where(User.email == email) if email else q.where(Membership.role == "owner")
        m = s.scalars(q.order_by(Membership.id)).first()
        if m is None:
            raise NotFound(f"{email or 'No owner'} is not a member of {ws.name!r}.")
        return Actor(m.user_id, ws.id)


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"Give inputs as name=value, not {pair!r}.")
        out[key.strip()] = value
    return out


def run(args) -> int:
    from engine import migrate
    from engine.workflows import runs, worker

    migrate.upgrade()
    actor = actor_for(args.workspace, args.user)
    view = runs.trigger_by_name(actor, args.workflow, parse_inputs(args.input or []), trigger="cli",
                                idempotency_key=args.idempotency_key)
    worker_id = f"cli-{os.getpid()}"
    stop = threading.Event()
    status = runs.status_of(view.id)
    if status in ("queued", "running") and worker.claim(worker_id, run_id=view.id):
        try:
            status = worker.execute(view.id, worker_id, stop=stop)
        except KeyboardInterrupt:
            stop.set()
            status = "interrupted"
    final = runs.get_run(actor, view.id)
    print(json.dumps({"run_id": final.id, "status": final.status, "outputs": final.outputs, "error": final.error,
                      "cost_usd": str(final.cost)}, default=str))
    return 0 if final.status in ("succeeded", "waiting") else 1
