"""Money operations on the store, shared by the admin API and the CLI."""
