"""Schedules: when a workflow runs or a report is sent, kept in the database and fired by the sidecar.

``models`` holds the rows (schedules, one fire row per nominal firing, the scheduler lease),
``cron`` turns an expression and a timezone into an APScheduler trigger, ``store`` is what
pages and services call. The UI only writes rows; the sidecar (``engine/sidecar``) reads them.
"""
