"""Workflows and their versions: save (each save a new version), list, compare, restore, clone,
pause and delete. A spec is validated before anything is stored, so a bad save changes nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, db
from engine.db import write_lock
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import Project
from engine.permissions import Actor, authorize, in_workspace
from engine.workflows import plan_limits, spec as specs
from engine.workflows.models import Workflow, WorkflowRun, WorkflowVersion


@dataclass(frozen=True)
class WorkflowView:
    id: int
    name: str
    description: str
    active: bool
    version: int
    source: str
    project_id: int | None
    updated_at: datetime
    last_status: str | None = None
    last_run_at: datetime | None = None
    last_cost: Decimal | None = None


@dataclass(frozen=True)
class VersionView:
    id: int
    version: int
    source: str
    note: str | None
    created_at: datetime


def _load(s: Session, actor: Actor, workflow_id: int) -> Workflow:
    return in_workspace(s, Workflow, workflow_id, actor.workspace_id, "workflow")


def by_name(s: Session, workspace_id: int, name: str) -> Workflow:
    wf = s.scalar(select(Workflow).where(Workflow.workspace_id == workspace_id, Workflow.name == name))
    if wf is None:
        raise NotFound(f"There is no workflow called {name!r} in this workspace.")
    return wf


def current_version(s: Session, wf: Workflow) -> WorkflowVersion:
    return s.scalar(select(WorkflowVersion).where(WorkflowVersion.workflow_id == wf.id,
                                                  WorkflowVersion.version == wf.current_version))


def _view(s: Session, wf: Workflow) -> WorkflowView:
    return WorkflowView(wf.id, wf.name, wf.description, wf.active, wf.current_version, current_version(s, wf).source,
                        wf.project_id, wf.updated_at)


def _check_project(s: Session, actor: Actor, project_id: int | None) -> None:
    if project_id is not None:
        in_workspace(s, Project, project_id, actor.workspace_id, "project")


def create(actor: Actor, source: str, *, project_id: int | None = None) -> WorkflowView:
    spec = specs.parse(source)
    try:
        with db.transaction() as s:
            write_lock(s)
            authorize(s, actor, "workflow.write")
            _check_project(s, actor, project_id)
            if s.scalar(select(Workflow.id).where(Workflow.workspace_id == actor.workspace_id,
                                                  Workflow.name == spec.name)):
                raise Conflict(f"A workflow called {spec.name!r} exists already; change name: in the spec.")
            plan_limits.check_new_workflow(s, actor.workspace_id)
            wf = Workflow(workspace_id=actor.workspace_id, name=spec.name, description=spec.description,
                          project_id=project_id, created_by=actor.user_id, current_version=1)
            s.add(wf)
            s.flush()
            s.add(WorkflowVersion(workflow_id=wf.id, version=1, source=source, spec=specs.dump(spec),
                                  created_by=actor.user_id, note="created"))
            s.flush()
            audit.record_for(s, actor, "workflow.create", "workflow", wf.id, name=spec.name)
            return _view(s, wf)
    except IntegrityError:
        raise Conflict(f"A workflow called {spec.name!r} exists already; change name: in the spec.") from None


def save(actor: Actor, workflow_id: int, source: str, *, note: str | None = None) -> WorkflowView:
    """A new version from ``source``; refused (nothing stored) when the spec has any problem."""
    spec = specs.parse(source)
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        wf = _load(s, actor, workflow_id)
        if spec.name != wf.name and s.scalar(select(Workflow.id).where(
                Workflow.workspace_id == actor.workspace_id, Workflow.name == spec.name, Workflow.id != wf.id)):
            raise Conflict(f"Another workflow is called {spec.name!r}; choose another name.")
        if current_version(s, wf).source == source:
            return _view(s, wf)  # nothing changed: no new version
        latest = s.scalar(select(func.max(WorkflowVersion.version)).where(WorkflowVersion.workflow_id == wf.id))
        wf.current_version = latest + 1
        wf.name, wf.description, wf.updated_at = spec.name, spec.description, utcnow()
        s.add(WorkflowVersion(workflow_id=wf.id, version=wf.current_version, source=source, spec=specs.dump(spec),
                              created_by=actor.user_id, note=(note or "")[:200] or None))
        s.flush()
        audit.record_for(s, actor, "workflow.save", "workflow", wf.id, version=wf.current_version)
        return _view(s, wf)


def get(actor: Actor, workflow_id: int) -> WorkflowView:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        return _view(s, _load(s, actor, workflow_id))


def list_workflows(actor: Actor, search: str = "") -> list[WorkflowView]:
    """The workspace's workflows, each with its last run's status and cost."""
    from engine.workflows import runs

    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        q = select(Workflow).where(Workflow.workspace_id == actor.workspace_id).order_by(Workflow.name)
        if search.strip():
            like = f"%{search.strip().lower()}%"
            q = q.where(func.lower(Workflow.name).like(like) | func.lower(Workflow.description).like(like))
        out = []
        for wf in s.scalars(q):
            last = s.scalar(select(WorkflowRun).where(WorkflowRun.workflow_id == wf.id,
                                                      WorkflowRun.parent_run_id.is_(None))
                            .order_by(WorkflowRun.id.desc()).limit(1))
            view = _view(s, wf)
            if last is not None:
                view = WorkflowView(**{**view.__dict__, "last_status": last.status, "last_run_at": last.created_at,
                                       "last_cost": runs.cost_of(s, last.id)})
            out.append(view)
        return out


def versions(actor: Actor, workflow_id: int) -> list[VersionView]:
    with db.read_session() as s:
        authorize(s, actor, "workflow.read")
        _load(s, actor, workflow_id)
        return [VersionView(v.id, v.version, v.source, v.note, v.created_at) for v in s.scalars(
            select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.version.desc()))]


def compare(actor: Actor, workflow_id: int, a: int, b: int) -> str:
    """A unified diff from version ``a`` to version ``b``."""
    by_number = {v.version: v for v in versions(actor, workflow_id)}
    if a not in by_number or b not in by_number:
        raise NotFound("Choose two versions this workflow has.")
    return "".join(difflib.unified_diff(by_number[a].source.splitlines(keepends=True),
                                        by_number[b].source.splitlines(keepends=True),
                                        fromfile=f"version {a}", tofile=f"version {b}"))


def restore(actor: Actor, workflow_id: int, version: int) -> WorkflowView:
    """Restoring is a save of the old source: history only grows."""
    by_number = {v.version: v for v in versions(actor, workflow_id)}
    if version not in by_number:
        raise NotFound(f"This workflow has no version {version}.")
    return save(actor, workflow_id, by_number[version].source, note=f"restored version {version}")


def set_active(actor: Actor, workflow_id: int, active: bool) -> WorkflowView:
    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        wf = _load(s, actor, workflow_id)
        wf.active, wf.updated_at = bool(active), utcnow()
        audit.record_for(s, actor, "workflow.activate" if active else "workflow.pause", "workflow", wf.id)
        return _view(s, wf)


def clone(actor: Actor, workflow_id: int) -> WorkflowView:
    with db.read_session() as s:
        authorize(s, actor, "workflow.write")
        wf = _load(s, actor, workflow_id)
        source, name = current_version(s, wf).source, wf.name
        taken = set(s.scalars(select(Workflow.name).where(Workflow.workspace_id == actor.workspace_id)))
    copy = next(f"{name} (copy{'' if i == 1 else f' {i}'})" for i in range(1, 1000)
                if f"{name} (copy{'' if i == 1 else f' {i}'})" not in taken)
    data, _ = specs.load(source)
    data["name"] = copy
    import yaml

    return create(actor, yaml.safe_dump(data, sort_keys=False, allow_unicode=True), project_id=None)


def delete(actor: Actor, workflow_id: int) -> None:
    """Delete the workflow, its versions and its runs (ledger rows stay: money spent is history)."""
    from engine.schedules import store as schedules
    from engine.workflows import payloads

    with db.transaction() as s:
        write_lock(s)
        authorize(s, actor, "workflow.write")
        wf = _load(s, actor, workflow_id)
        if s.scalar(select(func.count()).select_from(WorkflowRun).where(
                WorkflowRun.workflow_id == wf.id, WorkflowRun.status.in_(("running",)))):
            raise InvalidInput("This workflow has a run in progress; cancel it first, then delete.")
        run_ids = list(s.scalars(select(WorkflowRun.id).where(WorkflowRun.workflow_id == wf.id)))
        audit.record_for(s, actor, "workflow.delete", "workflow", wf.id, name=wf.name)
        schedules.delete_for_target(s, "workflow", wf.id)
        s.delete(wf)
    for run_id in run_ids:
        payloads.remove_run_files(run_id)
