"""Build backends of ``envyard serve`` beyond its in-process workers: Kubernetes Jobs (docs/kubernetes-builds.md).

* :mod:`.cluster`: the one interface the launcher uses to talk to a cluster, and its implementation on the
  ``kubernetes`` client;
* :mod:`.jobs`: the Job (and its token Secret) for one build attempt, as ``kubernetes`` client models;
* :mod:`.launcher`: the loop that keeps at most N Jobs for the queued builds and reconciles Jobs against builds.
"""

__all__ = ["cluster", "jobs", "launcher"]
