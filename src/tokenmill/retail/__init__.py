"""Retail: metering now; rating, holds, ledger and invoices come with the retail issue."""
