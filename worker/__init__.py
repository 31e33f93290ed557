"""Build workers: claim builds from the API over HTTP (:mod:`.client`, :mod:`.protocol`) and run each in a
sandboxed child process (:mod:`.runner`, :mod:`.sandbox`, :mod:`.job`, :mod:`.job_io`). A worker holds a token,
never database credentials, and imports nothing of the API's package."""

# the public names of this package: its modules
__all__ = [
    "client",
    "job",
    "job_io",
    "protocol",
    "runner",
    "sandbox",
    "settings",
]
