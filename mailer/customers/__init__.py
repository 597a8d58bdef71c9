"""Who mailer talks to. ``profiles`` owns the customers and tags tables (import, look-ups,
unsubscribe, suppression); ``contacts`` owns the contact log (calls, meetings, notes) and
each customer's last contact both ways; ``csv_rows`` validates CSV rows; ``context`` is
what templates see about a customer; ``tokens`` signs the links in every mail.
"""
