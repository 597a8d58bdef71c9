"""The customer's whole relationship with the company, across inbound and outbound:
``timeline`` merges every touch (mail, inquiries, calls, meetings, notes, unsubscribes) into
one newest-first list without I/O, ``history`` reads a page of each source for it;
``privacy`` is what mailer holds about one person, exported on request or erased for good.
"""
