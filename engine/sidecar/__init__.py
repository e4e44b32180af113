"""The sidecar (``python -m engine sidecar``): the process beside the UI that schedules, works runs and serves HTTP.

``http.py`` is its HTTP server: webhook triggers of workflows, Stripe's webhook and the health check.
"""
