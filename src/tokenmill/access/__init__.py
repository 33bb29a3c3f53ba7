"""Access: accounts, API keys and admin tokens; who may call which model."""
