"""The fleet: which deployment serves a request (pure choice), breakers, load."""
