"""Webhooks: events POSTed to URLs admins register, signed, through a durable queue.

A low layer on purpose: customers, inbound and outbound code record an event in the
transaction of the change it tells of, so a crash loses none (see ``events.record``).
"""
