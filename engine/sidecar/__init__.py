"""The sidecar: ``python -m engine sidecar``, the process beside the UI that schedules, works and serves HTTP.

process.py hosts it all (``Sidecar``); lease.py decides which sidecar schedules; reconcile.py
keeps the leader's APScheduler jobs equal to the schedule rows; firing.py writes each firing
(and misfires.py the ones that were missed); jobs.py builds the scheduler and the periodic
jobs; command.py is the command line's body. http.py is the small HTTP server beside it.
"""
