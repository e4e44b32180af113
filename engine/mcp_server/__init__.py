"""Meterbook as an MCP server: ``python -m engine mcp [--http --host H --port N --allowed-host NAME…]``.

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

    allowed: tuple[str, ...] = ()
    if args.http:  # checked before the database is touched: a refused bind does nothing
        allowed = tuple(dict.fromkeys(server.check_allowed_host(h) for h in args.allowed_host or ()))
        warning = server.check_bind(args.host, allowed)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    # Over stdio, stdout is the protocol: anything a migration prints goes to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        migrate.upgrade()
    if args.http:
        names = f" (Host names allowed besides it: {', '.join(allowed)})" if allowed else ""
        print(f"Meterbook MCP server on http://{args.host}:{args.port}{server.HTTP_PATH}{names}", file=sys.stderr,
              flush=True)
    server.serve(http=args.http, host=args.host, port=args.port, allowed_hosts=allowed)
    return 0
