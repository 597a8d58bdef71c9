"""The local sandbox: an SMTP server that keeps what it is given (``smtp_server``, owner of
the captured-mail table) and an IMAP mailbox the inbox watcher can read (``imap_server``),
so a fresh install runs the whole loop with no mail account.
"""
