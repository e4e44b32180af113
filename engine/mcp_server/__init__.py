"""Meterbook as an MCP server: ``python -m engine mcp [--http --host H --port N]``.

``server`` builds the SDK server and its tools, ``auth`` turns a presented API key into the
actor a call acts as, ``operations`` does the work through the engine's own services. The
command body lives here (``main``) so ``engine/cli.py`` only parses arguments.
"""

from __future__ import annotations

import contextlib
import sys


def main(args) -> int:
    from engine import migrate
    from engine.mcp_server import server

    # Over stdio, stdout is the protocol: anything a migration prints goes to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        migrate.upgrade()
    if args.http:
        print(f"Meterbook MCP server on http://{args.host}:{args.port}{server.HTTP_PATH}", file=sys.stderr, flush=True)
    server.serve(http=args.http, host=args.host, port=args.port)
    return 0
