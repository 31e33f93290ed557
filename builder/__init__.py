"""envyard's build pipeline: spec -> solve -> lock -> install -> pack -> OCI image.

Pure library code: no database, no HTTP server, no process-global state.
"""

# the public names of this package: its modules
__all__ = [
    "channels",
    "condapkg",
    "errors",
    "export",
    "fetch",
    "image",
    "install",
    "localchannel",
    "lock",
    "lockdiff",
    "lockfiles",
    "model",
    "oci",
    "pack",
    "pip_resolve",
    "pipeline",
    "policy",
    "progress",
    "records",
    "relocate",
    "settings",
    "solve",
    "spec",
    "spec_inline",
    "spec_pip",
    "spec_selectors",
    "spec_yaml",
    "tarstream",
    "url_policy",
    "virtual_packages",
    "why",
]
