"""Shared vocabulary with no I/O: config, the clock, errors, durations, categories, one-line
text and the value types every other package uses. Nothing here imports another mailer
package.
"""
