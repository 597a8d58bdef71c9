"""The HTTP API under /api/v1: what a company's other systems (a web shop, a CRM, a site's
forms) tell mailer and ask of it, with keys, scopes and a rate limit per key.

Its routes are typed pydantic models over the same owning modules the command line and the
web app use, so a customer upserted here passes the checks a CSV import applies.
"""
