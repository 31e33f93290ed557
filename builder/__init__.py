"""envyard's build pipeline: spec -> solve -> lock -> install -> pack -> OCI image.

Pure library code: no database, no HTTP server, no process-global state.
"""

# the public names of this package: its modules
__all__ = [
    "canonical",
    "channels",
    "condapkg",
    "data",
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
    "progress",
    "records",
    "relocate",
    "run",
    "run_manifest",
    "sandbox",
    "settings",
    "solve",
    "spec",
    "spec_inline",
    "spec_pip",
    "spec_selectors",
    "spec_yaml",
    "tarstream",
    "url_policy",
    "verify",
    "virtual_packages",
    "why",
]
