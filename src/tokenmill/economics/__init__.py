"""Economics: hardware and model catalogs and the performance model of inference (pure)."""
