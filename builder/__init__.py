"""envyard's build pipeline: spec -> solve -> lock -> install -> pack -> OCI image.

Pure library code: no database, no HTTP server, no process-global state.
"""
