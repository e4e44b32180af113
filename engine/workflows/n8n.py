"""Import of n8n workflow JSON (the file n8n's "Download" writes) into a Meterbook spec.

Mapped: Webhook and Schedule Trigger (they become the run's ``inputs.body`` and are listed as
triggers to set up, since triggers are not part of a spec), Manual Trigger, HTTP Request, Set,
IF, Switch, Code in Python, and OpenAI (the n8n base node and the LangChain one). Every other
node is left out and named in ``unmapped``. n8n expressions (``={{ $json.x }}``) become
templates over the upstream node's output (``nodes.<id>.x``); the result is validated like any
spec, so an import either gives a spec that saves or says what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import InvalidInput
from engine.workflows import spec as specs

TRIGGERS = {"n8n-nodes-base.webhook": "webhook", "n8n-nodes-base.scheduleTrigger": "schedule",
            "n8n-nodes-base.cron": "schedule", "n8n-nodes-base.manualTrigger": "manual"}
OPENAI = {"n8n-nodes-base.openAi", "@n8n/n8n-nodes-langchain.openAi", "@n8n/n8n-nodes-langchain.lmChatOpenAi"}
MAX_BYTES = 5_000_000


@dataclass
class Imported:
    source: str  # the spec as YAML
    triggers: list[dict] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # "Name (type)"
    notes: list[str] = field(default_factory=list)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "node"
    if base[0].isdigit() or base in specs.RESERVED:
        base = f"n_{base}"
    base = base[:60]
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}_{n}", n + 1
    taken.add(slug)
    return slug


class _Converter:
    def __init__(self, data: dict):
        self.data = data
        self.nodes = [n for n in data["nodes"] if not n.get("disabled")]
        taken: set[str] = set()
        self.ids = {n["name"]: _slug(n["name"], taken) for n in self.nodes}
        self.by_name = {n["name"]: n for n in self.nodes}
        self.kept: set[str] = set()
        self.needs: dict[str, list[str]] = {n["name"]: [] for n in self.nodes}
        self.upstream: dict[str, str] = {}
        self.uses_body = False
        self.result = Imported("")

    # --- expressions ------------------------------------------------------------------------

    def _ref(self, node_name: str | None) -> str:
        # IF and Switch pass their input items through in n8n: $json after them is what came before.
        seen = set()
        while node_name in self.by_name and node_name not in seen and self.by_name[node_name]["type"] in (
                "n8n-nodes-base.if", "n8n-nodes-base.switch"):
            seen.add(node_name)
            node_name = self.upstream.get(node_name)
        if node_name is None or node_name not in self.kept:
            self.uses_body = True
            return "inputs.body"
        node = self.by_name[node_name]
        ref = f"nodes.{self.ids[node_name]}"
        return f"{ref}.body" if node["type"] == "n8n-nodes-base.httpRequest" else ref

    def expr(self, value: Any, node_name: str) -> Any:
        if isinstance(value, dict):
            return {k: self.expr(v, node_name) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expr(v, node_name) for v in value]
        if not isinstance(value, str) or not value.startswith("="):
            return value
        text = value[1:]
        text = re.sub(r"\$\(\s*['\"]([^'\"]+)['\"]\s*\)\.(?:item|first\(\))\.json", lambda m: self._ref(m[1]), text)
        text = re.sub(r"\$node\[\s*['\"]([^'\"]+)['\"]\s*\]\.json", lambda m: self._ref(m[1]), text)
        text = re.sub(r"\$json\b", lambda m: self._ref(self.upstream.get(node_name)), text)
        text = re.sub(r"\{\{\s*(.*?)\s*\}\}", lambda m: "{{ " + m[1] + " }}", text)
        return text

    # --- nodes ------------------------------------------------------------------------------

    def convert(self, node: dict) -> dict | None:
        kind, p, name = node["type"], node.get("parameters") or {}, node["name"]
        if kind == "n8n-nodes-base.httpRequest":
            params: dict[str, Any] = {"url": self.expr(p.get("url", ""), name),
                                      "method": str(p.get("method") or p.get("requestMethod") or "GET").upper()}
            headers = {h["name"]: self.expr(h.get("value", ""), name)
                       for h in (p.get("headerParameters") or {}).get("parameters", []) if h.get("name")}
            query = {q["name"]: self.expr(q.get("value", ""), name)
                     for q in (p.get("queryParameters") or {}).get("parameters", []) if q.get("name")}
            if headers:
                params["headers"] = headers
            if query:
                params["query"] = query
            if p.get("jsonBody"):
                body = p["jsonBody"]
                try:
                    params["body"] = json.loads(body)
                except (TypeError, json.JSONDecodeError):
                    params["body"] = self.expr(body, name)
            elif (p.get("bodyParameters") or {}).get("parameters"):
                params["body"] = {b["name"]: self.expr(b.get("value", ""), name)
                                  for b in p["bodyParameters"]["parameters"] if b.get("name")}
            if p.get("authentication") not in (None, "none"):
                self.result.notes.append(f"{name}: add its credential on the Workflows page and set credential:")
            return {"type": "http", "params": params}
        if kind == "n8n-nodes-base.set":
            values: dict[str, Any] = {}
            for a in (p.get("assignments") or {}).get("assignments", []):
                values[a.get("name", "value")] = self.expr(a.get("value"), name)
            for group in (p.get("values") or {}).values():
                for a in group if isinstance(group, list) else []:
                    values[a.get("name", "value")] = self.expr(a.get("value"), name)
            return {"type": "transform", "params": {"value": values}}
        if kind == "n8n-nodes-base.if":
            return {"type": "condition", "params": {"when": self._conditions(p.get("conditions") or {}, name)}}
        if kind == "n8n-nodes-base.switch":
            return self._switch(p, name)
        if kind == "n8n-nodes-base.code":
            if p.get("language") not in ("python", "pythonNative"):
                return None
            return {"type": "python", "params": {"code": _python(p.get("pythonCode", "return []")),
                                                 "data": "{{ " + self._ref(self.upstream.get(name)) + " }}"}}
        if kind in OPENAI:
            messages = (p.get("messages") or {}).get("values") or (p.get("prompt") or {}).get("messages") or []
            user = [self.expr(m.get("content", ""), name) for m in messages if m.get("role", "user") != "system"]
            system = [self.expr(m.get("content", ""), name) for m in messages if m.get("role") == "system"]
            prompt = "\n\n".join(user) or self.expr(p.get("prompt") if isinstance(p.get("prompt"), str) else
                                                    p.get("text", ""), name)
            model = p.get("modelId") or p.get("model")
            model = model.get("value") if isinstance(model, dict) else model
            if model:
                self.result.notes.append(f"{name}: used {model} in n8n; here it takes the workspace's text route "
                                         "(set model: connection/model to pin one)")
            params = {"prompt": prompt or "{{ inputs.body }}"}
            if system:
                params["system"] = "\n\n".join(system)
            return {"type": "llm", "params": params}
        return None

    def _conditions(self, c: dict, name: str) -> str:
        ops = {"equals": "==", "notEquals": "!=", "equal": "==", "notEqual": "!=", "gt": ">", "larger": ">",
               "gte": ">=", "largerEqual": ">=", "lt": "<", "smaller": "<", "lte": "<=", "smallerEqual": "<="}
        parts = []
        for cond in c.get("conditions", []) if isinstance(c.get("conditions"), list) else []:
            op = (cond.get("operator") or {}).get("operation", "equals")
            parts.append(self._compare(cond.get("leftValue"), ops.get(op), cond.get("rightValue"), op, name))
        for group in ("string", "number", "boolean"):
            for cond in c.get(group, []) if isinstance(c.get(group), list) else []:
                op = cond.get("operation", "equal")
                parts.append(self._compare(cond.get("value1"), ops.get(op), cond.get("value2"), op, name))
        joiner = " or " if c.get("combinator") == "or" or c.get("combineOperation") == "any" else " and "
        return "{{ " + (joiner.join(parts) or "true") + " }}"

    def _compare(self, left, op, right, raw_op, name) -> str:
        def operand(v):
            if isinstance(v, str) and v.startswith("="):
                inner = self.expr(v, name)
                found = re.fullmatch(r"\s*\{\{\s*(.*?)\s*\}\}\s*", inner)
                return f"({found[1]})" if found else json.dumps(inner)
            return json.dumps(v)
        if op is None:
            if raw_op in ("contains", "notContains"):
                return f"({operand(right)} {'not ' if raw_op == 'notContains' else ''}in {operand(left)})"
            if raw_op in ("isEmpty", "isNotEmpty", "exists", "notExists"):
                return f"({'not ' if raw_op in ('isEmpty', 'notExists') else ''}{operand(left)})"
            return "true"
        return f"({operand(left)} {op} {operand(right)})"

    def _switch(self, p: dict, name: str) -> dict:
        cases, value = [], None
        for i, rule in enumerate((p.get("rules") or {}).get("values") or (p.get("rules") or {}).get("rules") or []):
            conds = (rule.get("conditions") or {}).get("conditions") or []
            if conds:
                value = value or conds[0].get("leftValue")
                cases.append(str(conds[0].get("rightValue", i)))
            else:
                cases.append(str(rule.get("value2", i)))
        value = p.get("value1", value)
        rendered = self.expr(value, name) if isinstance(value, str) else json.dumps(value)
        self._switch_cases = getattr(self, "_switch_cases", {})
        self._switch_cases[name] = cases
        return {"type": "switch", "params": {"value": rendered, "cases": cases or ["default_only"]}}

    def branch(self, source: str, index: int) -> str | None:
        kind = self.by_name[source]["type"]
        if kind == "n8n-nodes-base.if":
            return "then" if index == 0 else "else"
        if kind == "n8n-nodes-base.switch":
            cases = getattr(self, "_switch_cases", {}).get(source, [])
            return cases[index] if index < len(cases) else "default"
        return None

    def run(self) -> Imported:
        connections = self.data.get("connections") or {}
        for source, outs in connections.items():
            for index, targets in enumerate((outs or {}).get("main") or []):
                for t in targets or []:
                    if t.get("node") in self.needs and source in self.by_name:
                        self.needs[t["node"]].append((source, index))
                        self.upstream.setdefault(t["node"], source)
        for node in self.nodes:
            if node["type"] in TRIGGERS:
                kind = TRIGGERS[node["type"]]
                if kind != "manual":
                    p = node.get("parameters") or {}
                    self.result.triggers.append({"type": kind, "node": node["name"],
                                                 **({"path": p.get("path")} if kind == "webhook" else
                                                    {"rule": p.get("rule") or p.get("triggerTimes")})})
                    self.uses_body = self.uses_body or kind == "webhook"
            else:
                self.kept.add(node["name"])  # provisionally: references resolve against kept nodes
        out_nodes = []
        for node in self.nodes:
            if node["type"] in TRIGGERS:
                continue
            converted = self.convert(node)
            if converted is None:
                self.kept.discard(node["name"])
                self.result.unmapped.append(f"{node['name']} ({node['type']})")
                continue
            out_nodes.append((node, converted))
        spec_nodes = []
        for node, converted in out_nodes:
            needs = []
            for source, index in self.needs[node["name"]]:
                if source in self.kept:
                    b = self.branch(source, index)
                    needs.append(self.ids[source] + (f":{b}" if b else ""))
            entry = {"id": self.ids[node["name"]], "name": node["name"], **converted}
            if needs:
                entry["needs"] = list(dict.fromkeys(needs))
            spec_nodes.append(entry)
        if not spec_nodes:
            raise InvalidInput("None of this workflow's nodes can be imported: "
                               + (", ".join(self.result.unmapped) or "it has only triggers") + ".")
        doc: dict[str, Any] = {"name": str(self.data.get("name") or "Imported from n8n")[:200],
                               "description": "Imported from n8n."}
        if self.uses_body:
            doc["inputs"] = {"body": {"type": "object", "default": {}, "description": "What the trigger received"}}
        doc["nodes"] = spec_nodes
        self.result.source = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
        return self.result


def _python(code: str) -> str:
    """n8n's Code node (Python) as ``main(data)``, with ``_input.all()``/``.first()`` over the data."""
    body = "\n".join("    " + line for line in code.splitlines()) or "    return []"
    return ("def main(data):\n"
            "    class _Item(dict):\n"
            "        @property\n"
            "        def json(self):\n"
            "            return self\n"
            "    class _Input:\n"
            "        def all(self):\n"
            "            return [_Item(x) for x in (data if isinstance(data, list) else [data])]\n"
            "        def first(self):\n"
            "            return self.all()[0]\n"
            "    _input = _Input()\n"
            f"{body}\n")


def convert(text: str | bytes) -> Imported:
    """A spec from n8n's workflow JSON; ``InvalidInput`` when the file is not one, or maps to a bad spec."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise InvalidInput(f"The file is {len(text):,} bytes; an n8n workflow is far smaller (limit {MAX_BYTES:,}).")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("This is not an n8n workflow file: it is not UTF-8 text.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"This is not an n8n workflow file: not JSON (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # n8n's API and CLI export a list
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not isinstance(
            data.get("connections", {}), dict) or not all(isinstance(n, dict) and "type" in n and "name" in n
                                                          for n in data["nodes"]):
        raise InvalidInput("This is not an n8n workflow file: it needs \"nodes\" (each with a name and a type) and "
                           "\"connections\", as n8n's Download writes them.")
    result = _Converter(data).run()
    try:
        specs.parse(result.source)
    except specs.SpecError as exc:
        raise InvalidInput(f"The imported workflow does not validate: {exc}. Unmapped nodes: "
                           f"{', '.join(result.unmapped) or 'none'}.") from None
    return result
