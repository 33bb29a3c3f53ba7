"""Engines: what produces tokens. ``openai`` (any OpenAI-compatible server) and ``sim``."""
