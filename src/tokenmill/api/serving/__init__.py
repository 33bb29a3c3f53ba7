"""The serving room: the one request path every surface's requests take (the admin API and
the dashboard live beside it in ``api``, and never on it)."""
