"""A Kubernetes API server stand-in that the official client and kubectl talk to over HTTP.

    with KubeApiServer() as api:
        api.write_kubeconfig(tmp / "kubeconfig")
        ...

See ``server.KubeApiServer`` for auth, RBAC and the service proxy; ``store`` for the storage and
watch semantics; ``patch`` for the three patch formats; ``resources`` for the served kinds.
"""

from rotator.sandbox.kubeapi.rbac import Attributes
from rotator.sandbox.kubeapi.server import AuditEntry, Identity, KubeApiServer

__all__ = ["Attributes", "AuditEntry", "Identity", "KubeApiServer"]
