"""Shared vocabulary with no I/O: config, the clock, errors, durations, categories and the
value types every other package uses. Nothing here imports another mailer package.
"""
