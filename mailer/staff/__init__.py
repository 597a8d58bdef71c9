"""The company's own people: who signs in to the web app, as what, and how to reach them
(a display name for replies, a zone and an address for their digest). ``users`` owns the
users table."""
