"""The admin room: the operator's API under ``/admin/v1`` (accounts, keys, money, prices,
plans, limits, fleet), with its OpenAPI spec and its bearer-token check. Never on the hot
path: the serving room (``api.serving``) does not import it."""
