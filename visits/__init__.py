"""Ticket visits: which vehicle reached a ticket's site, when, and for how long (issue #16).

The work is one SQL function, `tracksolid.refresh_ticket_visits` (migrations/R__visits.sql);
this package runs it for the worker's `ticket_visits` job and from the shell:

    python -m visits refresh              # the job once: tickets active in the last N days
    python -m visits refresh --days 90    # after a backfill of older positions

docs/visits.md has the definitions, the settings and the limits of GPS evidence.
"""
