"""``tokenmill bench``: measure any OpenAI-compatible endpoint under a concurrency sweep."""
