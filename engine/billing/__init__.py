"""Billing: plans and their limits, Stripe checkout, portal, webhooks, meter events and invoices.

    plans.py          data/plans.yaml and the self-hosted plan (billing off: no Stripe key)
    models.py         billing tables
    stripe_api.py     the one StripeClient; Stripe's errors as ours
    limits.py         the effective plan of a workspace, every limit check, the generation hook
    subscriptions.py  a subscription's current state copied onto the workspace's account
    accounts.py       customers, checkout and portal sessions, refresh, invoices (the page's service)
    webhooks.py       handle_webhook(payload, signature): verify, process once, act on current state
    meters.py         the meter-event outbox: enqueue with the ledger row, drain, alerts, reconcile
    drainer.py        run_once(): one round of sending usage (the sidecar's periodic job)

Importing ``engine.billing.limits`` installs the plan hook into the generation path.
"""
