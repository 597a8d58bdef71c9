"""The customer's whole relationship with the company, across inbound and outbound: what
mailer holds about one person, exported on request or erased for good."""
