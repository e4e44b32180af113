"""The approval node: the run pauses (no worker holds it) until a workspace member approves or rejects."""

from __future__ import annotations

from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class ApprovalParams(Params):
    message: str = ""


def run_approval(ctx: NodeContext, p: ApprovalParams) -> NodeResult:
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "approved": True})
    assert ctx.approval is not None
    decision = ctx.approval(p.message)
    if decision is None:
        return NodeResult(waiting=True, logs="waiting for approval")
    if decision["status"] == "rejected":
        comment = f": {decision['comment']}" if decision.get("comment") else ""
        raise NodeFailed(f"Rejected by {decision['by']}{comment}", retry=False)
    return NodeResult({"approved": True, "by": decision["by"], "comment": decision.get("comment")},
                      logs=f"approved by {decision['by']}")


register(NodeType("approval", ApprovalParams, run_approval, summary="pause until a member approves"))
