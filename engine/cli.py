"""``python -m engine …``: the command line. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from engine.config import PROJECT_ROOT, get_settings


def cmd_init(_args) -> int:
    from engine import migrate

    revision = migrate.upgrade()
    print(f"Database ready at revision {revision}.")
    return 0


def cmd_demo_data(args) -> int:
    from engine import demo, migrate

    migrate.upgrade()
    summary = demo.seed(seed=args.seed, days=args.days, rows=args.rows, progress=_progress)
    print()
    print(summary.describe())
    return 0


def _progress(done: int, total: int) -> None:
    print(f"\r  {done:,}/{total:,} ledger rows", end="", file=sys.stderr, flush=True)


def cmd_up(args) -> int:
    """The database, the demo on first start, then the sidecar and the UI together; Ctrl-C stops both."""
    from engine import demo, migrate

    settings = get_settings()
    migrate.upgrade()
    if not args.no_demo and demo.is_empty():
        print("First start: creating the demo workspace…", flush=True)
        demo.seed(seed=settings.demo_seed, rows=settings.demo_rows, progress=_progress)
        print()
    # The sidecar fires schedules, works queued runs and deliveries, exports the warehouse, drains
    # billing and serves webhooks; the UI process never does any of it.
    sidecar = subprocess.Popen([sys.executable, "-m", "engine", "sidecar"], cwd=PROJECT_ROOT, env=os.environ.copy())
    url = settings.base_url
    print(f"\nMeterbook is running at {url}")
    if demo.has_demo_user():
        print(f"Demo login: {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}")
    print("Press Ctrl-C to stop.\n", flush=True)
    command = [
        sys.executable, "-m", "pages._server", "run", str(PROJECT_ROOT / "streamlit_app.py"),
        "--server.port", str(settings.port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    try:
        return subprocess.call(command, cwd=PROJECT_ROOT, env=os.environ.copy())
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_sidecar(sidecar)


def _stop_sidecar(sidecar: subprocess.Popen) -> None:
    """SIGTERM: it stops claiming, lets running work finish, hands the rest back and releases its lease."""
    if sidecar.poll() is None:
        sidecar.terminate()
    try:
        sidecar.wait(timeout=45)
    except subprocess.TimeoutExpired:
        sidecar.kill()
    except KeyboardInterrupt:  # a second Ctrl-C: do not wait
        sidecar.kill()


def cmd_run(args) -> int:
    from engine.workflows import cli_run

    return cli_run.run(args)


def cmd_sidecar(args) -> int:
    from engine.sidecar import command

    return command.run(args)


def cmd_mcp(args) -> int:
    from engine import mcp_server

    return mcp_server.main(args)


def cmd_export(_args) -> int:
    from engine import migrate, warehouse_sync

    migrate.upgrade()
    stats = warehouse_sync.export_now()
    print(f"Exported {stats.rows:,} ledger rows ({stats.files} files written, {stats.compacted} compacted) "
          f"in {stats.seconds:.1f} s; the warehouse now holds every row up to id {stats.watermark}.")
    return 0


def cmd_billing(args) -> int:
    from datetime import datetime, timedelta, timezone

    from engine.billing import meters
    from engine.billing.plans import billing_configured

    if not billing_configured():
        print("Billing is not configured (no METERBOOK_STRIPE_SECRET_KEY): nothing to send.")
        return 0
    if args.action == "drain":
        result = meters.drain()
        meters.raise_stale_alerts()
        print(f"Sent {result.sent}, already at Stripe {result.already_there}, refused {result.rejected}, "
              f"waiting {result.pending}.")
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
            return 1
        return 0
    try:
        day = (datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=timezone.utc) if args.day
               else datetime.now(timezone.utc) - timedelta(days=1))
    except ValueError:
        print(f"error: --day must be a date like 2026-12-01, not {args.day!r}.", file=sys.stderr)
        return 1
    results = meters.reconcile(day)
    for r in results:
        state = "ok" if r.matches else "MISMATCH"
        print(f"workspace {r.workspace_id}: ours {r.ours:,} units (${r.ledger_cost:,.4f}), Stripe {r.stripe:,}: {state}")
    if not results:
        print(f"Nothing billed by meter on {day:%Y-%m-%d} (or METERBOOK_STRIPE_METER_ID is not set).")
    return 0 if all(r.matches for r in results) else 1


def cmd_bench(args) -> int:
    from engine import bench

    result = bench.run(args)
    print(json.dumps(result, default=str))
    return 0


def cmd_rotate_key(args) -> int:
    from pathlib import Path

    from engine import vault

    new_key = None
    if args.new_key:
        try:
            text = Path(args.new_key).read_text()
        except OSError as exc:
            raise vault.MasterKeyError(f"Cannot read {args.new_key}: {exc.strerror}.") from None
        new_key = vault.parse_master_key(text, source=f"The key file {args.new_key}")

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} workspace data keys re-wrapped", end="", file=sys.stderr, flush=True)

    rotation = vault.rotate(new_key, progress=progress)
    print(file=sys.stderr)
    print(rotation.describe())
    if args.new_key and rotation.key_file is not None:
        print(f"The key was copied with mode 0600; {args.new_key} is no longer needed and can be deleted.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Meterbook engine commands.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create or migrate the database (safe to run again)").set_defaults(func=cmd_init)

    demo = sub.add_parser("demo-data", help="create the demo workspace with 90 days of usage")
    demo.add_argument("--seed", type=int, default=get_settings().demo_seed)
    demo.add_argument("--days", type=int, default=90)
    demo.add_argument("--rows", type=int, default=None, help="ledger rows (default: a realistic team's volume)")
    demo.set_defaults(func=cmd_demo_data)

    up = sub.add_parser("up", help="prepare the database and demo data, then run the app")
    up.add_argument("--no-demo", action="store_true", help="do not create the demo workspace on first start")
    up.set_defaults(func=cmd_up)

    sub.add_parser("export", help="export new ledger rows to the analytics warehouse (the sidecar does it every 30 s)"
                   ).set_defaults(func=cmd_export)

    run = sub.add_parser("run", help="run a workflow now and print its outputs as JSON")
    run.add_argument("workflow", help="the workflow's name")
    run.add_argument("--input", action="append", metavar="NAME=VALUE", help="an input (repeat for more)")
    run.add_argument("--workspace", help="workspace name or id (default: the only one)")
    run.add_argument("--user", help="run as this member's email (default: the workspace's owner)")
    run.add_argument("--idempotency-key", help="a repeated run with the same key does nothing")
    run.set_defaults(func=cmd_run)

    sidecar = sub.add_parser("sidecar", help="run the scheduler and the workflow and report delivery workers")
    from engine.sidecar import command as sidecar_command

    sidecar_command.add_arguments(sidecar)
    sidecar.set_defaults(func=cmd_sidecar)

    mcp = sub.add_parser("mcp", help="serve Meterbook's tools over MCP (stdio, or streamable HTTP with --http)")
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP: the address to listen on (default 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=8766, help="HTTP: the port (default 8766)")
    mcp.add_argument("--allowed-host", action="append", metavar="NAME",
                     help="HTTP: a host name clients send in the Host header (name or name:port; repeatable); "
                          "needed when --host is not a loopback address")
    mcp.set_defaults(func=cmd_mcp)

    rotate = sub.add_parser(
        "rotate-key", help="re-wrap the workspace data keys under a new master key (safe while running)"
    )
    rotate.add_argument("--new-key", metavar="FILE", help="read the new master key from FILE (default: generate one)")
    rotate.set_defaults(func=cmd_rotate_key)

    billing = sub.add_parser("billing", help="send waiting usage to Stripe's meter, or compare a day's totals")
    billing.add_argument("action", choices=["drain", "reconcile"])
    billing.add_argument("--day", help="reconcile: the UTC day, YYYY-MM-DD (default yesterday)")
    billing.set_defaults(func=cmd_billing)

    from engine import bench as bench_areas

    bench = sub.add_parser("bench", help="measure one area; prints a JSON object on its last line")
    bench_areas.add_parsers(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.errors import MeterbookError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MeterbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
