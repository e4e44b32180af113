"""A spec as a Graphviz DOT graph for the editor's preview, coloured by step status when a run is given."""

from __future__ import annotations

import json

from engine.workflows import spec as specs

COLOURS = {"succeeded": "#c8e6c9", "failed": "#ffcdd2", "running": "#bbdefb", "retrying": "#ffe0b2",
           "waiting": "#fff9c4", "skipped": "#eeeeee", "cancelled": "#e0e0e0"}


def _q(text: str) -> str:
    return json.dumps(text)  # a DOT string literal: quotes and backslashes escaped


def to_dot(spec: specs.WorkflowSpec, statuses: dict[str, str] | None = None) -> str:
    statuses = statuses or {}
    lines = ["digraph workflow {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="sans-serif", '
             'fillcolor="#ffffff"];']
    for n in spec.nodes:
        label = f"{n.name or n.id}\\n({n.type})"
        colour = COLOURS.get(statuses.get(n.id, ""), "#ffffff")
        lines.append(f"  {_q(n.id)} [label={_q(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}, "
                     f"fillcolor={_q(colour)}];")
    for n in spec.nodes:
        for text in n.needs:
            need = specs.Need.parse(text)
            attrs = f" [label={_q(need.branch)}{', color=red, fontcolor=red' if need.branch == 'error' else ''}]" \
                if need.branch else ""
            lines.append(f"  {_q(need.node)} -> {_q(n.id)}{attrs};")
    lines.append("}")
    return "\n".join(lines)
