"""Service functions: one per route, taking a session and typed arguments, raising EnvyardError subclasses."""
