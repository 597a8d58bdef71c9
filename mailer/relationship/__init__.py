"""The customer as one relationship: ``timeline`` merges every touch (mail, inquiries,
calls, meetings, notes, unsubscribes) into one newest-first list, without I/O; ``history``
reads one page of each source for it.
"""
