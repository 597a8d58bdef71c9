"""Everything that leaves: the outbox (the only road to SMTP, owner of the outbox and
delivery-attempt tables), the throttle that decides when a customer may be mailed, the
template store and its render workers, composing, the SMTP edge and the delivery workers.
"""
