"""Environments for Kubernetes sessions: Pods, Jobs, pull Secrets and JupyterHub (KubeSpawner) profiles.

* :mod:`.model`: the typed inputs (a built environment, the session's options, a run);
* :mod:`.generate`: pure functions from those to the official client's models, serialized;
* :mod:`.service`: a build's rows and image config as an :class:`~.model.EnvironmentImage`, pull tokens;
* :mod:`.routes`: ``/api/v1/namespaces/{ns}/environments/{name}/kubernetes/{pod,job}``,
  ``/api/v1/namespaces/{ns}/kubernetes/pull-secret`` and ``/api/v1/jupyterhub/profiles``.
"""

__all__ = ["generate", "model", "routes", "service"]
