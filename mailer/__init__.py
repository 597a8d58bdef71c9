"""mailer: a company's single point of contact by email."""

__version__ = "0.1.0"
