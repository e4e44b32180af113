"""Workflows: a spec of nodes and ``needs`` edges, run by a durable executor over rows in the database.

spec.py validates YAML/JSON specs; templates.py fills node params with Jinja2; store.py keeps
workflows and their versions; runs.py triggers, cancels, retries and lists runs; worker.py claims
queued runs under a lease and executor.py runs their nodes; nodes/ holds one module per node
family; python_sandbox.py runs the python node's code (docs/architecture.md, "Workflows").
"""
