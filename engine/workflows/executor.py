"""The durable executor: claim a queued run under a lease, run its nodes, checkpoint every step.

    queued ──claim (lease + heartbeat)──▶ running ──▶ succeeded / failed / cancelled
                                           │  ▲
                           approval node ──▼  │ someone decides
                                          waiting

Nodes whose ``needs`` are met run in parallel threads. Each attempt is checkpointed before and
after it runs; a run whose worker died (its lease expired without a heartbeat) is claimed again
by any worker and resumes after the steps that succeeded, so a paid AI step is never called
twice. Retries back off exponentially with full jitter (``uniform(0, min(cap, base·2^n))``). A
node that passes its timeout is abandoned (its thread cannot be killed; nodes that talk to
the network pass the timeout on, so they end too) and counts as a failed attempt.

Claiming runs and the worker loop that hosts this are in ``worker.py``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from engine.dbtypes import utcnow
from engine.errors import InvalidInput, MeterbookError, NotFound, PermissionDenied
from engine.permissions import Actor
from engine.workflows import nodes, spec as specs, templates
from engine.workflows.checkpoints import LeaseLost, MemoryRun, StepState
from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
MAX_PARALLEL = 8
POLL_S = 0.05
STOP_GRACE_S = 5.0
FINAL = ("succeeded", "failed", "skipped", "cancelled")


@dataclass
class _Outcome:
    status: str  # succeeded failed waiting cancelled
    output: Any = None
    branch: str | None = None
    error: str | None = None


class RunExecution:
    """One claimed run (or a dry run) from where its checkpoints left it to its end."""

    def __init__(self, store, spec: specs.WorkflowSpec, *, inputs: dict, actor: Actor, project_id: int | None,
                 run_info: dict, stop: threading.Event | None = None, dry_run: bool = False,
                 deadline: float | None = None, subrun=None):
        self.store, self.spec, self.inputs, self.actor = store, spec, inputs, actor
        self.project_id, self.run_info, self.dry_run = project_id, run_info, dry_run
        self.stop = stop or threading.Event()
        self.cancelled = threading.Event()
        self.deadline = deadline
        self.subrun = subrun
        self.states: dict[str, StepState] = store.steps()
        for st in self.states.values():
            # "running": its worker died mid-attempt, so run it again; "waiting": an approval,
            # looked at again now that the run was woken (someone decided).
            if st.status in ("running", "retrying", "waiting"):
                st.status = "pending"
        self.estimated: list = []
        self._lock = threading.Lock()
        self._failed: tuple[str, str] | None = None

    # --- what templates see -------------------------------------------------------------------

    def variables(self) -> dict[str, Any]:
        with self._lock:
            outputs = {k: st.output for k, st in self.states.items() if st.status in ("succeeded", "failed")}
        return {**outputs, "inputs": self.inputs, "nodes": outputs, "run": self.run_info}

    def branch_of(self, node_id: str) -> str | None:
        st = self.states[node_id]
        return st.output.get("branch") if isinstance(st.output, dict) else None

    def _need(self, text: str) -> bool | None:
        """True: met; False: can never be met (the node is skipped); None: not decided yet."""
        need = specs.Need.parse(text)
        st = self.states.get(need.node)
        if st is None or st.status not in FINAL:
            return None
        node = self.spec.node(need.node)
        if need.branch is None:
            return st.status == "succeeded" or (st.status == "failed" and node.on_error == "continue")
        if need.branch == "error" and node.on_error == "route":
            return st.status == "failed"
        return st.status == "succeeded" and self.branch_of(need.node) == need.branch

    # --- one node -----------------------------------------------------------------------------

    def _context(self, node_id: str, attempt: int, variables: dict, timeout_s: float) -> NodeContext:
        return NodeContext(run_id=self.store.run_id, workspace_id=self.actor.workspace_id, actor=self.actor,
                           project_id=self.project_id, node_id=node_id, attempt=attempt, dry_run=self.dry_run,
                           cancelled=self.cancelled, variables=variables, call=self._call_inline,
                           subrun=(lambda name, inputs: self.subrun(node_id, name, inputs)) if self.subrun else None,
                           approval=lambda message: self.store.approval(node_id, message), timeout_s=timeout_s,
                           estimated_cost=self.estimated)

    def _prepare(self, node_type: nodes.NodeType, params: dict, variables: dict) -> dict:
        keep = node_type.lazy | node_type.verbatim
        rendered = templates.render({k: v for k, v in params.items() if k not in keep}, variables, where="params")
        return {**rendered, **{k: v for k, v in params.items() if k in keep}}

    def _call_inline(self, raw: dict, variables: dict, label: str) -> NodeResult:
        """A map step for one item: filled in, checked and run once (the map node's retries cover it)."""
        step = specs.NodeSpec.model_validate(raw)
        node_type = nodes.get(step.type)
        try:
            params = nodes.parse_params(node_type, self._prepare(node_type, step.params, variables))
        except InvalidInput as exc:
            raise NodeFailed(f"{step.id}: {exc}", retry=False) from None
        ctx = self._context(label, variables.get("_attempt", 1), variables, step.timeout_s)
        result = self._timed(node_type, ctx, params, step.timeout_s)
        if result.waiting:
            raise NodeFailed("an approval cannot run inside a map", retry=False)
        return result

    def _timed(self, node_type: nodes.NodeType, ctx: NodeContext, params, timeout_s: float) -> NodeResult:
        box: dict[str, Any] = {}

        def target():
            try:
                box["result"] = node_type.run(ctx, params)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"node-{ctx.node_id}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise NodeFailed(f"The node did not finish within its timeout of {timeout_s:g} s.")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _execute_pure(self, n: specs.NodeSpec, node_type: nodes.NodeType, extra: dict | None) -> _Outcome:
        attempt = (self.states[n.id].attempt if n.id in self.states else 0) + 1
        started, prepared = utcnow(), None
        variables = {**self.variables(), **(extra or {})}
        try:
            prepared = self._prepare(node_type, n.params, variables)
            result = node_type.run(self._context(n.id, attempt, variables, n.timeout_s),
                                   nodes.parse_params(node_type, prepared))
        except MeterbookError as exc:  # InvalidInput from a template, NodeFailed from the node
            self.store.record(n.id, n.type, attempt, prepared, "failed", error=str(exc), started=started)
            return _Outcome("failed", error=str(exc))
        self.store.record(n.id, n.type, attempt, prepared, "succeeded", output=result.output, logs=result.logs,
                          started=started)
        return _Outcome("succeeded", result.output, result.branch)

    def execute_node(self, n: specs.NodeSpec, extra: dict | None = None) -> _Outcome:
        node_type = nodes.get(n.type)
        if node_type.pure:
            return self._execute_pure(n, node_type, extra)
        attempt = self.states[n.id].attempt if n.id in self.states else 0
        for k in range(n.retry.max_attempts):
            attempt += 1
            variables = {**self.variables(), **(extra or {}), "_attempt": attempt}
            try:
                prepared = self._prepare(node_type, n.params, variables)
            except InvalidInput as exc:
                self.store.begin(n.id, n.type, attempt, None)
                self.store.end(n.id, attempt, "failed", error=str(exc))
                return _Outcome("failed", error=str(exc))
            self.store.begin(n.id, n.type, attempt, prepared)
            try:
                params = nodes.parse_params(node_type, prepared)
                result = self._timed(node_type, self._context(n.id, attempt, variables, n.timeout_s), params,
                                     n.timeout_s)
            except NodeFailed as exc:
                error, retry = str(exc), exc.retry
            except (InvalidInput, NotFound, PermissionDenied) as exc:
                error, retry = str(exc), False
            except MeterbookError as exc:
                error, retry = str(exc), True
            except Exception as exc:  # a bug in a node: shown on the step, logged with its traceback
                log.exception("node %s of run %s crashed", n.id, self.store.run_id)
                error, retry = f"{type(exc).__name__}: {exc}", True
            else:
                if result.waiting:
                    self.store.end(n.id, attempt, "waiting", logs=result.logs)
                    return _Outcome("waiting")
                self.store.end(n.id, attempt, "succeeded", output=result.output, logs=result.logs)
                return _Outcome("succeeded", result.output, result.branch)
            last = k == n.retry.max_attempts - 1 or not retry or self.cancelled.is_set()
            self.store.end(n.id, attempt, "failed" if last else "retrying", error=error)
            if last:
                return _Outcome("failed", error=error)
            delay = random.uniform(0, min(n.retry.max_backoff_s, n.retry.backoff_s * 2 ** k))
            if self.cancelled.wait(delay):
                return _Outcome("failed", error=error)
        raise AssertionError("unreachable")

    # --- the run ------------------------------------------------------------------------------

    def _mark(self, node_id: str, status: str, outcome: _Outcome | None = None) -> None:
        with self._lock:
            st = self.states.setdefault(node_id, StepState(node_id, status))
            st.status = status
            if outcome is not None:
                st.output, st.error = outcome.output, outcome.error

    def run(self) -> str:
        """Run to the end (or to a pause); returns the run's status. ``LeaseLost``: stop, write nothing more."""
        pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix=f"run-{self.store.run_id}")
        running: dict[Future, str] = {}
        failure: tuple[str, str] | None = None
        cancelled = stopping = False
        last_beat = time.monotonic()
        try:
            while True:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    last_beat = time.monotonic()
                    if not self.store.heartbeat():
                        cancelled = True
                if self.deadline is not None and time.time() > self.deadline and failure is None:
                    failure = ("", f"The run passed its time limit of {self.spec.timeout_s:g} s.")
                if self.stop.is_set():
                    stopping = True
                if (cancelled or failure or stopping) and not self.cancelled.is_set():
                    self.cancelled.set()
                if not (cancelled or failure or stopping):
                    self._schedule(pool, running)
                    failure = failure or self._failed
                if not running:
                    break
                done, _ = wait(list(running), timeout=POLL_S if not self.cancelled.is_set() else STOP_GRACE_S,
                               return_when=FIRST_COMPLETED)
                if not done and self.cancelled.is_set():
                    break  # nodes that ignore cancellation are abandoned
                for f in done:
                    node_id = running.pop(f)
                    outcome = f.result()
                    self._mark(node_id, outcome.status, outcome)
                    node = self.spec.node(node_id)
                    if outcome.status == "failed" and node.on_error == "fail" and failure is None:
                        failure = (node_id, outcome.error or "failed")
        except LeaseLost:
            self.cancelled.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self._finish(failure, cancelled, stopping)

    def _schedule(self, pool: ThreadPoolExecutor, running: dict[Future, str]) -> None:
        busy = set(running.values())
        changed = True
        while changed:
            changed = False
            for n in self.spec.nodes:
                st = self.states.get(n.id)
                if n.id in busy or (st is not None and st.status in (*FINAL, "waiting")):
                    continue
                met = [self._need(x) for x in n.needs]
                if any(m is False for m in met):
                    self._mark(n.id, "skipped")
                    self.store.record(n.id, n.type, 0, None, "skipped")
                    changed = True
                elif all(m is True for m in met) and nodes.get(n.type).pure:
                    outcome = self.execute_node(n)  # quick and bounded: no thread hand-off
                    self._mark(n.id, outcome.status, outcome)
                    if outcome.status == "failed" and n.on_error == "fail":
                        self._failed = (n.id, outcome.error or "failed")
                        return
                    changed = True
                elif all(m is True for m in met) and len(running) < MAX_PARALLEL:
                    running[pool.submit(self.execute_node, n)] = n.id
                    busy.add(n.id)

    def _finish(self, failure: tuple[str, str] | None, cancelled: bool, stopping: bool) -> str:
        if cancelled:
            self._close_open_steps("cancelled")
            self.store.finish("cancelled", error="Cancelled.")
            return "cancelled"
        if failure is None and stopping and any(
                self.states.get(n.id) is None or self.states[n.id].status not in (*FINAL, "waiting")
                for n in self.spec.nodes):
            self.store.release()
            return "queued"
        if failure is None and any(st.status == "waiting" for st in self.states.values()):
            self.store.pause()
            return "waiting"
        if failure is None:
            try:
                outputs = templates.render(self.spec.outputs, self.variables(), where="outputs")
            except InvalidInput as exc:
                failure = ("", str(exc))
            else:
                self.store.finish("succeeded", outputs=outputs)
                return "succeeded"
        node_id, error = failure
        self._close_open_steps("cancelled")
        self._handle_failure(node_id, error)
        message = f"{node_id}: {error}" if node_id else error
        self.store.finish("failed", error=message, failed_node=node_id or None)
        return "failed"

    def _close_open_steps(self, status: str) -> None:
        for node_id, st in list(self.states.items()):
            if st.status not in FINAL:
                st.status = status
                self.store.end(node_id, st.attempt, status, error="The run ended before this step finished.")

    def _handle_failure(self, node_id: str, error: str) -> None:
        """The workflow's error handlers, in order; one that fails does not stop the rest."""
        if not self.spec.on_failure:
            return
        self.cancelled = threading.Event()  # the handlers themselves must be able to run
        for handler in self.spec.on_failure:
            self.execute_node(handler, {"error": {"node": node_id, "message": error}})


def dry_run(actor: Actor, spec: specs.WorkflowSpec, inputs: dict[str, Any]) -> dict:
    """Run the spec with no side effects: AI steps are estimated, not called; nothing is stored."""
    store = MemoryRun()
    execution = RunExecution(store, spec, inputs=specs.coerce_inputs(spec, inputs), actor=actor, project_id=None,
                             run_info={"id": None, "claims": 1, "trigger": "dry_run"}, dry_run=True,
                             deadline=time.time() + min(spec.timeout_s, 120))
    execution.run()
    total = sum(execution.estimated) if execution.estimated else None
    return {**store.outcome, "steps": list(store.records.values()), "estimated_cost": total}
