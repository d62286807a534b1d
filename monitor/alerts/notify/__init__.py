"""Notification channels: alerts sent where people are (webhooks, chat robots, e-mail).

``messages`` (pure): what a channel gets, the sandboxed templates, filters and the rate limit
with its digest. ``channels`` (pure): each service's request and the meaning of its answer.
``delivery``: the durable per-channel queue and the task that sends it.
"""
