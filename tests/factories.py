"""Small builders for test data: users through the engine's own services, scripted routes straight into the tables."""

from __future__ import annotations

from collections.abc import Sequence

from engine import accounts, db, generation
from engine.models import ProviderConnection, RouteTarget
from engine.permissions import Actor
from tests import scripted_provider as scripted

PASSWORD = "correct horse battery"


def owner(email: str = "owner@example.com", workspace: str = "Acme Analytics") -> Actor:
    user, ws = accounts.create_first_owner(email, "Olivia Owner", PASSWORD, workspace)
    return Actor(user.id, ws.id)


def member(owner_actor: Actor, email: str, role: str) -> Actor:
    token = accounts.invite(owner_actor, email, role)
    user = accounts.accept_invitation(token, name=email.split("@")[0].title(), password=PASSWORD)
    return Actor(user.id, owner_actor.workspace_id)


def scripted_routes(actor: Actor, *routed: tuple[str, str, str], unrouted: Sequence[tuple[str, str]] = ()) -> None:
    """Connections of the scripted provider (tests/scripted_provider.py), with its script emptied.

    Each of ``routed`` is (name, priced as, model), that model routed for text in the order given;
    each of ``unrouted`` is (name, priced as), a connection only. The rows go straight into the
    tables, so no audit events are written for them.
    """
    scripted.install()
    generation._cached_provider.cache_clear()
    wanted = [*routed, *((name, price_as, None) for name, price_as in unrouted)]
    with db.transaction() as s:
        for position, (name, price_as, model) in enumerate(wanted):
            c = ProviderConnection(workspace_id=actor.workspace_id, name=name, provider_type="scripted",
                                   price_provider=price_as)
            s.add(c)
            s.flush()
            if model is not None:
                s.add(RouteTarget(workspace_id=actor.workspace_id, kind="text", position=position, connection_id=c.id,
                                  model=model))
