"""Which channels to remove: importance criteria (CRITERIA), targets and the instant cost model."""
