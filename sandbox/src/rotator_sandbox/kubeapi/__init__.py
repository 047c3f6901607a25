"""A Kubernetes API server stand-in that the official client and kubectl talk to.

    with KubeApiServer() as api:
        api.write_kubeconfig(tmp / "kubeconfig")
        ...

Modules: ``server`` (KubeApiServer: routing, identities, discovery, the resource verbs),
``store`` (storage, resourceVersions, watch history), ``patch`` (the three patch formats),
``selectors``, ``rbac``, ``resources`` (the served kinds, discovery documents), ``tables``
(kubectl's server-side printing), ``proxy`` (the service proxy), ``transport`` (HTTP/1.1, TLS,
chunked watch streams), ``tls``, ``protobuf`` (the few protobuf bodies kubectl sends),
``status`` (Status errors).
"""

from rotator_sandbox.kubeapi.rbac import Attributes, Identity
from rotator_sandbox.kubeapi.server import AuditEntry, KubeApiServer

__all__ = ["Attributes", "AuditEntry", "Identity", "KubeApiServer"]
