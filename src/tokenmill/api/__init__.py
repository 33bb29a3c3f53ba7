"""HTTP surfaces: the OpenAI-compatible API, the admin API, health and metrics."""
