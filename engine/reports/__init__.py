"""Scheduled reports: a notebook or a Cost & Usage view, rendered on the server and emailed.

    models.py        reports, report_deliveries, workspace_smtp
    store.py         create / update / pause / resume / delete / list / get (the schedule row too)
    smtp_settings.py the workspace's mail server (password in the vault), with the env fallback
    content.py       what a report says, as data: figures, Markdown, tables, charts
    charts.py        charts as PNG (matplotlib: email clients run no JavaScript)
    render.py        the email: HTML with cid: images, CSV/Excel/PDF attachments (pdf.py)
    deliveries.py    send now / test / resend, the queue the sidecar's workers drain, history
                     (SMTP itself is engine/smtp.py, shared with alert emails)
    schedule_link.py the report's schedule as an engine.schedules row; importing it registers reports as
                     schedule targets (store and deliveries import it; not this package, which
                     engine.models imports while engine.schedules may still be loading)
"""
