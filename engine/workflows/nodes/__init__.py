"""The node types a workflow can use, registered by name.

Every built-in family registers itself here the way a new one would: ``register(NodeType(...))``.
A node type is a params model (pydantic; checked for its keys when a spec is saved and for its
values once the templates are filled in), a ``run`` function, and what the executor must know:
whether it has side effects (a dry run does not call it), which branches it can route to, and
whether it is an AI call (a dry run estimates it instead).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from engine.errors import InvalidInput, MeterbookError
from engine.permissions import Actor


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class NodeResult:
    output: Any = None
    branch: str | None = None  # condition/switch: which branch its dependants may take
    logs: str = ""
    waiting: bool = False  # approval: the run pauses until someone decides


class NodeFailed(MeterbookError):
    """The node ran and failed; the message is shown on the step. ``retry`` False: trying again cannot help."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


@dataclass
class NodeContext:
    """What a node may use while it runs. ``call`` runs a node spec inline (map's sub-chains)."""

    run_id: int | None
    workspace_id: int
    actor: Actor
    project_id: int | None
    node_id: str
    attempt: int
    dry_run: bool
    cancelled: threading.Event
    variables: dict[str, Any]
    call: Callable[[dict, dict[str, Any], str], NodeResult] | None = None
    subrun: Callable[[str, dict[str, Any]], dict] | None = None
    approval: Callable[[str], dict | None] | None = None
    timeout_s: float = 300.0
    estimated_cost: list[Decimal] = field(default_factory=list)

    def request_id(self, suffix: str = "") -> str:
        """The ledger's request id for an AI call of this step: one per run, node and attempt."""
        base = f"wf{self.run_id}-{self.node_id[:30]}-a{self.attempt}"
        return (base + (f"-{suffix}" if suffix else ""))[:64]


@dataclass(frozen=True)
class NodeType:
    name: str
    params: type[Params]
    run: Callable[[NodeContext, Any], NodeResult]
    side_effects: bool = False
    ai: bool = False
    branches: Callable[[dict], set[str]] | None = None
    lazy: frozenset[str] = frozenset()  # params the node fills in itself (map's steps, per item)
    verbatim: frozenset[str] = frozenset()  # params that are never templates (python's code)
    # Pure: no side effects and bounded work (sandboxed templates cap their loops), so the
    # executor runs it in its own thread, without a timeout thread, checkpointed once, at the end.
    pure: bool = False
    check: Callable[[dict], list[str]] | None = None  # more checks at save, beyond the params' keys
    summary: str = ""


TYPES: dict[str, NodeType] = {}
FAMILIES = ("ai", "http", "data", "flow", "sql", "messages", "approval", "python", "mcp")
_loaded = False
_load_lock = threading.Lock()


def register(node_type: NodeType) -> NodeType:
    TYPES[node_type.name] = node_type
    return node_type


def types() -> dict[str, NodeType]:
    global _loaded
    with _load_lock:
        if not _loaded:
            for family in FAMILIES:
                importlib.import_module(f"engine.workflows.nodes.{family}")
            _loaded = True
    return TYPES


def get(name: str) -> NodeType:
    found = types().get(name)
    if found is None:
        raise InvalidInput(f"Unknown node type {name!r}; use one of {', '.join(sorted(types()))}.")
    return found


def parse_params(node_type: NodeType, rendered: dict) -> Any:
    """The filled-in params as the node's model; ``NodeFailed`` (not retried) says which value is wrong."""
    try:
        return node_type.params.model_validate(rendered)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise NodeFailed(f"params.{where}: {first['msg']}", retry=False) from None
