"""The one interface between the build launcher and a Kubernetes cluster (:class:`Cluster`), and its
implementation on the official client's ``BatchV1Api``/``CoreV1Api`` (:class:`KubernetesCluster`).

Tests implement :class:`Cluster` with an executor that runs each Job's container as a local process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client as k8s

from envyard.builder.errors import ServiceError

__all__ = ["IN_CLUSTER_NAMESPACE", "Cluster", "KubernetesCluster", "connect", "job_finished"]

log = logging.getLogger(__name__)
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Cluster(Protocol):
    """What the launcher needs of a cluster, in one namespace."""

    def create_job(self, job: k8s.V1Job, secret: k8s.V1Secret) -> bool:
        """Create ``job`` and ``secret`` (its token; owned by the Job, so deleted with it). False when a Job of
        that name exists already (HTTP 409): not an error, the attempt has its Job."""
        ...

    def list_jobs(self, label_selector: str) -> list[k8s.V1Job]:
        """The Jobs ``label_selector`` matches."""
        ...

    def delete_job(self, name: str) -> None:
        """Delete the Job and its pods (background propagation); a Job already gone is not an error."""
        ...


def job_finished(job: k8s.V1Job) -> bool:
    """Whether the Job has finished (a Complete or Failed condition, or a succeeded/failed pod: backoffLimit 0)."""
    status = job.status
    if status is None:
        return False
    if any(c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or []):
        return True
    return bool(status.succeeded or status.failed)


class KubernetesCluster:
    """:class:`Cluster` on a real API server (in-cluster config, else the kubeconfig)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.namespace = namespace
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)

    def create_job(self, job: k8s.V1Job, secret: k8s.V1Secret) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            created = self.batch.create_namespaced_job(self.namespace, job)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise ServiceError(f"creating Job {job.metadata.name} failed: HTTP {exc.status} {exc.reason}",
                               hint="check the envyard ServiceAccount's Role (create jobs, secrets)") from None
        secret.metadata.owner_references = [k8s.V1OwnerReference(
            api_version="batch/v1", kind="Job", name=created.metadata.name, uid=created.metadata.uid,
            block_owner_deletion=False)]
        try:
            self.core.create_namespaced_secret(self.namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                self.delete_job(job.metadata.name)  # a Job without its token could never claim
                raise ServiceError(f"creating Secret {secret.metadata.name} failed: HTTP {exc.status}",
                                   hint="check the envyard ServiceAccount's Role (create secrets)") from None
        return True

    def list_jobs(self, label_selector: str) -> list[k8s.V1Job]:
        return list(self.batch.list_namespaced_job(self.namespace, label_selector=label_selector).items)

    def delete_job(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise ServiceError(f"deleting Job {name} failed: HTTP {exc.status} {exc.reason}",
                                   hint="check the envyard ServiceAccount's Role (delete jobs)") from None


def connect(namespace: str | None) -> KubernetesCluster:
    """The cluster this server runs in (its ServiceAccount), else the one of the kubeconfig; the namespace
    defaults to the pod's own. A clear error when neither is configured."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except (ConfigException, OSError, TypeError) as exc:
            raise ServiceError(f"no Kubernetes cluster is configured for the build backend: {exc}",
                               hint="run envyard serve in a pod with a ServiceAccount (deploy/kubernetes), or set "
                               "KUBECONFIG; or choose another --build-backend") from None
    if namespace is None:
        namespace = (IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else "default")
    return KubernetesCluster(k8s.ApiClient(), namespace)
