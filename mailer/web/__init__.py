"""The web app (Starlette, Jinja2, htmx): see ``mailer.web.app``."""
