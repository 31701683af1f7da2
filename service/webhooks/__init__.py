"""Outbound webhooks: signing, SSRF policy, pinned HTTP delivery, retry schedule, events.

Pure building blocks with no database or queue: ``settings``, ``signing``, ``ssrf``,
``http`` (one delivery attempt), ``schedule`` (when to retry) and ``events`` (catalogue and
payloads). Persistence and task wiring live beside them.
"""
