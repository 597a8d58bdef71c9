"""Everything that arrives: the IMAP edge (``mailbox``), parsing raw mail (``parsing``), the
acknowledgement rules (``autoreply``), business hours, the inquiry log (``inquiries``, owner
of the inquiry tables) and the watcher that ties them together (``watcher``, owner of the
mailbox position).
"""
