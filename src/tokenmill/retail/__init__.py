"""Retail: prices (rating), holds on funds (charging), the ledger's rules."""
