"""A sealed-secrets controller: an ordinary API client that unseals SealedSecrets into Secrets.

Mirrors bitnami-labs/sealed-secrets ``pkg/controller/controller.go`` (``unseal``,
``updateSealedSecretStatus``) and ``server.go``:

- watches SealedSecrets in every namespace; an update whose spec did not change is suppressed
  (``sealedSecretChanged`` compares only the spec), so status writes do not loop;
- decrypts every item with each private key in turn (``rotator_sandbox.unseal``, an independent
  implementation of ``HybridDecrypt``); on failure: Warning Event ``ErrUnsealFailed``
  "Failed to unseal: <err>" and the ``Synced`` condition False with the error as message;
- creates the Secret, or updates data, labels, annotations, ownerReferences and type of one it
  controls (template metadata copied; ownerReference to the SealedSecret, ``controller: true``);
  a Secret it does not control is left alone with ``ErrUpdateFailed`` "Resource ... already
  exists and is not managed by SealedSecret";
- on success: Normal Event ``Unsealed`` "SealedSecret unsealed successfully" and ``Synced``
  True;
- a failed unseal (decryption or API error) is retried with the workqueue's exponential backoff
  (5 ms doubling) up to ``max_unseal_retries`` (``--max-unseal-retries``, 5) times, then given up
  (``processNextItem``: ``NumRequeues(key) < maxRetries``);
- the status (``updateSealedSecretStatus``) follows ``version``:
  ``v0.24.1`` and older write it only when ``observedGeneration`` differs from the generation, so
  the FIRST result of a generation stays (a failed attempt stays ``Synced=False`` after its retry
  succeeded); ``v0.24.2`` writes it only when the condition's status changes, so
  ``observedGeneration`` never moves while the condition stays True (#1295); ``v0.24.3`` on
  (#1360, the default ``v0.36.6``) writes it when the condition or the generation changed;
  ``update_status=False`` (``--update-status=false``) never writes it;
- the status is written with ``UpdateStatus`` of the object as read for the unseal (its
  resourceVersion): if anything wrote the object meanwhile the write conflicts (409), which is
  only logged and never retried;
- serves ``GET /v1/cert.pem`` (newest key's cert, ``application/x-pem-file``) and
  ``POST /v1/verify`` (200 when the posted SealedSecret opens, 409 when not, 500 for a body that
  does not decode into a SealedSecret: ``AttemptUnseal``), rate-limited like ``server.go``'s
  ``rateLimiter`` (GCRA, ``--rate-limit`` 2/s, ``--rate-limit-burst`` 2, per path and
  X-Forwarded-For: 429 with Retry-After), on its own port (``address``, 127.0.0.1 by default),
  registered as a real install looks to the API server: its Pod (``podIPs``), the Service
  ``sealed-secrets-controller`` (kube-system, port ``http``) and an EndpointSlice with
  ``targetRef`` to the Pod, so the service proxy reaches it.

Differences from upstream (deliberate, documented): the object is read with a GET when its key
is worked on (upstream: from the informer's cache); each Event is a new object (upstream's
recorder aggregates repeats into one Event, ``count`` + 1 and a new ``lastTimestamp``); no
Secret informer (a deleted Secret is not recreated
until the SealedSecret's spec changes); keys are renewed only by ``rotate_key()`` (upstream: every
30 days); template ``data`` (non-secret templated items) is not supported; the status is written
Fault hooks: ``unseal_delay_s``; ``fail_unseal`` (a message: every unseal fails with it);
``fail_secret_writes`` (the next N Secret writes fail like an API server error);
``fail_cert_requests`` (the next N ``/v1/cert.pem`` answer 500 "cannot get certificate");
``before_status_write`` (called with the object just before its status is written: another
writer, e.g. to provoke the conflict); ``rewrite_secret`` (called with the Secret body just
before it is written, returns what is stored instead: whatever rewrites the Secret on its way,
like a mutating admission webhook, kubernetes staging/src/k8s.io/apiserver/pkg/admission/
plugin/webhook/mutating/dispatcher.go; the controller still records ``Unsealed``);
``drop_events`` (Events are lost: client-go
tools/record/events_cache.go ``EventSourceObjectSpamFilter`` lets a source send 25 Events about
an object and then 1 per 5 minutes, the broadcaster drops Events when its queue is full
(tools/record/event.go, ``watch.DropIfChannelFull``), and kube-apiserver deletes Events after
``--event-ttl``, 1 h); ``rotate_key(pair)`` (a new newest key; old keys still decrypt).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator_sandbox.controllers.base import (
    ENDPOINT_SLICE,
    EVENT,
    POD,
    SEALED_SECRET,
    SECRET,
    SERVICE,
    Controller,
    Obj,
    api_status,
    meta,
    now_rfc3339,
)
from rotator_sandbox.unseal import ControllerKeyPair, UnsealError, unseal_manifest

log = logging.getLogger(__name__)

SERVICE_NAME = "sealed-secrets-controller"
SERVICE_NAMESPACE = "kube-system"
PORT_NAME = "http"
SERVICE_PORT = 8080
COMPONENT = "sealed-secrets"
SUCCESS_UNSEALED = "Unsealed"
ERR_UNSEAL_FAILED = "ErrUnsealFailed"
ERR_UPDATE_FAILED = "ErrUpdateFailed"
MANAGED_ANNOTATION = "sealedsecrets.bitnami.com/managed"
# The releases whose status writing differs (pkg/controller/controller.go
# updateSealedSecretStatus at each tag); LATEST behaves like v0.24.3 and every later release.
V0_24_1, V0_24_2, LATEST = "v0.24.1", "v0.24.2", "v0.36.6"
VERSIONS = (V0_24_1, V0_24_2, LATEST)
MAX_UNSEAL_RETRIES = 5  # cmd/controller/main.go: --max-unseal-retries default
VERIFY_RATE, VERIFY_BURST = 2, 2  # cmd/controller/main.go: --rate-limit, --rate-limit-burst


class RateLimiter:
    """GCRA like throttled's ``NewGCRARateLimiter`` (pkg/controller/server.go ``rateLimiter``):
    ``rate`` per second sustained, ``burst`` more at once; ``allow`` -> (ok, retry after s)."""

    def __init__(
        self, rate: int, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = 1.0 / rate
        self._tolerance = self._interval * burst
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, float]:
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, now), now)
            if tat - now > self._tolerance:
                return False, tat - now - self._tolerance
            self._tat[key] = tat + self._interval
            return True, 0.0


def parse_version(text: str) -> str:
    """The status behaviour of a sealed-secrets release: ``v0.24.1`` (and older), ``v0.24.2``,
    or ``v0.36.6`` (v0.24.3 and later). ValueError names the choices."""
    wanted = text if text.startswith("v") else f"v{text}"
    try:
        parts = tuple(int(p) for p in wanted[1:].split("."))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ValueError(f"not a sealed-secrets version: {text!r} (e.g. {', '.join(VERSIONS)})")
    if parts <= (0, 24, 1):
        return V0_24_1
    if parts == (0, 24, 2):
        return V0_24_2
    return LATEST


SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # k8s.io/api discovery/v1 LabelServiceName
# The node the controller's Pod is bound to: no kubelet (real or simulated) runs it, this
# process does.
CONTROLLER_NODE = "sandbox-controllers"


class SealedSecretsController(Controller):
    name = "sealed-secrets"

    def __init__(
        self,
        kubeconfig: Path,
        *,
        key_pairs: Sequence[ControllerKeyPair],
        unseal_delay_s: float = 0.0,
        version: str = LATEST,
        update_status: bool = True,
        max_unseal_retries: int = MAX_UNSEAL_RETRIES,
        address: str = "127.0.0.1",
    ) -> None:
        super().__init__(kubeconfig)
        self.address = address  # where it listens, and the Pod IP it registers
        if not key_pairs:
            raise ValueError("the controller needs at least one key pair")
        self._lock = threading.Lock()
        self._pairs = list(key_pairs)
        self.unseal_delay_s = unseal_delay_s
        self.version = parse_version(version)
        self.update_status = update_status
        self.max_unseal_retries = max_unseal_retries
        self.fail_unseal: str | None = None
        self.fail_secret_writes = 0
        self.fail_cert_requests = 0
        self.verify_limiter = RateLimiter(VERIFY_RATE, VERIFY_BURST)
        self.before_status_write: Callable[[Obj], None] | None = None
        self.rewrite_secret: Callable[[Obj], Obj] | None = None
        self.drop_events = False
        self._requeues: dict[tuple[str, str], int] = {}
        self._specs: dict[tuple[str, str], str] = {}
        self._server: ThreadingHTTPServer | None = None
        self.unsealed = 0
        self.failed = 0

    # -- keys ------------------------------------------------------------------------------------

    @property
    def cert_pem(self) -> bytes:
        with self._lock:
            return self._pairs[-1].cert_pem

    @property
    def private_keys(self) -> list[rsa.RSAPrivateKey]:
        with self._lock:
            return [p.private_key for p in reversed(self._pairs)]

    def rotate_key(self, pair: ControllerKeyPair) -> None:
        """A new newest key (served at /v1/cert.pem); older keys still decrypt."""
        with self._lock:
            self._pairs.append(pair)

    # -- lifecycle -------------------------------------------------------------------------------

    def setup(self) -> None:
        self._serve()
        self.register_service()
        self.informer(SEALED_SECRET, self._on_event)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def register_service(self) -> None:
        """What a real install shows the API server, so its service proxy reaches this process:
        the controller's Pod (Running, Ready, ``status.podIPs`` = the address it listens on), a
        Service selecting it (port ``http``) and the EndpointSlice the endpointslice controller
        derives from them, with ``targetRef`` to the Pod. kubernetes
        ``pkg/registry/core/service/storage/storage.go`` proxies only to an EndpointSlice
        address whose ``targetRef`` Pod lists it (``isValidAddress``); a real server also
        refuses a loopback address there, so against one ``address`` must not be 127.0.0.1."""
        self.kube.ensure_namespace(SERVICE_NAMESPACE)
        labels = {"name": SERVICE_NAME}
        pod = self._register_pod(labels)
        service: Obj = {
            "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [
                    {
                        "name": PORT_NAME,
                        "port": SERVICE_PORT,
                        "targetPort": self.port,
                        "protocol": "TCP",
                    }
                ],
                "type": "ClusterIP",
            },
        }
        endpoint_slice: Obj = {
            "metadata": {
                "name": f"{SERVICE_NAME}-sandbox",
                "namespace": SERVICE_NAMESPACE,
                "labels": {**labels, SERVICE_NAME_LABEL: SERVICE_NAME},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [self.address],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": SERVICE_NAMESPACE,
                        "name": meta(pod)["name"],
                        "uid": meta(pod).get("uid", ""),
                    },
                }
            ],
            "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}],
        }
        for kind, body in ((SERVICE, service), (ENDPOINT_SLICE, endpoint_slice)):
            name = body["metadata"]["name"]
            current = self.kube.get(kind, SERVICE_NAMESPACE, name)
            if current is None:
                self.kube.create(kind, SERVICE_NAMESPACE, body)
            else:
                body["metadata"]["resourceVersion"] = meta(current).get("resourceVersion")
                self.kube.replace(kind, SERVICE_NAMESPACE, name, body)

    def _register_pod(self, labels: dict[str, str]) -> Obj:
        """This process as the controller's Pod: the status a kubelet would write for it."""
        name = f"{SERVICE_NAME}-sandbox"
        pod = self.kube.get(POD, SERVICE_NAMESPACE, name)
        if pod is None:
            body: Obj = {
                "metadata": {"name": name, "namespace": SERVICE_NAMESPACE, "labels": labels},
                "spec": {
                    "nodeName": CONTROLLER_NODE,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "controller",
                            "image": "docker.io/bitnami/sealed-secrets-controller",
                            "ports": [{"name": PORT_NAME, "containerPort": self.port}],
                        }
                    ],
                },
            }
            pod = self.kube.create(POD, SERVICE_NAMESPACE, body)
        stamp = now_rfc3339()
        status = {
            "phase": "Running",
            "podIP": self.address,
            "podIPs": [{"ip": self.address}],
            "startTime": stamp,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": stamp}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
        }
        patched = self.kube.patch_status(POD, SERVICE_NAMESPACE, name, status)
        return patched or pod

    def _serve(self) -> None:
        controller = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(
                self,
                status: int,
                body: bytes,
                content_type: str = "text/plain",
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                for header, value in (headers or {}).items():
                    self.send_header(header, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/v1/cert.pem" and controller.take_cert_failure():
                    self._reply(500, b"cannot get certificate\n")
                elif path == "/v1/cert.pem":
                    self._reply(200, controller.cert_pem, "application/x-pem-file")
                elif path in ("/healthz", "/"):
                    self._reply(200, b"ok")
                else:
                    self._reply(404, b"404 page not found\n")

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if path != "/v1/verify":
                    self._reply(404, b"404 page not found\n")
                    return
                client = self.headers.get("X-Forwarded-For") or ""
                allowed, retry_after = controller.verify_limiter.allow(f"{path} {client}")
                if not allowed:
                    wait = str(max(1, math.ceil(retry_after)))
                    self._reply(429, b"limit exceeded\n", headers={"Retry-After": wait})
                    return
                # AttemptUnseal: a body that does not decode into a SealedSecret is an error
                # (500); one that decodes but does not open is "not valid" (409).
                try:
                    doc = yaml.safe_load(raw)
                except yaml.YAMLError:
                    doc = None
                if not isinstance(doc, dict) or doc.get("kind") != "SealedSecret":
                    self._reply(500, b"")
                    return
                ok = controller.can_unseal(doc)
                self._reply(200 if ok else 409, b"OK\n" if ok else b"Conflict\n")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.address, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sealed-secrets-http",
            daemon=True,
        ).start()

    # -- the loop --------------------------------------------------------------------------------

    def _on_event(self, etype: str, obj: Obj) -> None:
        key = (str(meta(obj).get("namespace")), str(meta(obj).get("name")))
        if etype == "DELETED":
            self._specs.pop(key, None)  # the Secret goes by garbage collection (ownerReference)
            return
        spec = json.dumps(obj.get("spec"), sort_keys=True)
        if self._specs.get(key) == spec:
            return  # sealedSecretChanged: "update suppressed, no changes in spec"
        self._specs[key] = spec
        self._requeues.pop(key, None)  # a new spec: the workqueue's counter starts again
        self.queue.add(key, after=self.unseal_delay_s)

    def take_cert_failure(self) -> bool:
        with self._lock:
            if self.fail_cert_requests <= 0:
                return False
            self.fail_cert_requests -= 1
            return True

    def can_unseal(self, doc: Obj) -> bool:
        try:
            unseal_manifest(doc, self.private_keys)
        except (UnsealError, ValueError):
            return False
        return True

    def reconcile(self, key: Any) -> None:
        namespace, name = key
        ss = self.kube.get(SEALED_SECRET, namespace, name)
        if ss is None:
            self._requeues.pop(key, None)
            return
        err: str | None = None
        try:
            err = self._unseal(ss)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            log.warning("sealed-secrets: %s/%s: unseal failed: %s", namespace, name, err)
        finally:
            self._update_status(ss, err)
        # processNextItem: Forget on success; AddRateLimited while NumRequeues < maxRetries
        # (the default controller rate limiter: 5 ms doubling per failure); then give up.
        if err is None:
            self._requeues.pop(key, None)
            return
        requeues = self._requeues.get(key, 0)
        if requeues < self.max_unseal_retries:
            self._requeues[key] = requeues + 1
            self.queue.add(key, after=0.005 * 2**requeues)
        else:
            self._requeues.pop(key, None)
            log.info("sealed-secrets: %s/%s: error updating, giving up: %s", namespace, name, err)

    def _unseal(self, ss: Obj) -> str | None:
        """Create or update the Secret; the error message, or None on success."""
        namespace, name = str(meta(ss)["namespace"]), str(meta(ss)["name"])
        try:
            items = self._decrypt(ss)
        except (UnsealError, ValueError) as exc:
            self.failed += 1
            self._event(ss, "Warning", ERR_UNSEAL_FAILED, f"Failed to unseal: {exc}")
            log.info("sealed-secrets: %s/%s: unseal failed: %s", namespace, name, exc)
            return str(exc)
        desired = self._secret_for(ss, items)
        if self.fail_secret_writes > 0:
            self.fail_secret_writes -= 1
            msg = "Internal error occurred: etcdserver: request timed out"
            self._event(ss, "Warning", ERR_UPDATE_FAILED, msg)
            return msg
        current = self.kube.get(SECRET, namespace, name)
        if current is None:
            self.kube.create(SECRET, namespace, self._rewritten(desired))
        else:
            if not _controlled_by(current, ss) and (
                (meta(current).get("annotations") or {}).get(MANAGED_ANNOTATION) != "true"
            ):
                msg = f'Resource "{name}" already exists and is not managed by SealedSecret'
                self._event(ss, "Warning", ERR_UPDATE_FAILED, msg)
                return f"failed update: {msg}"
            # pkg/controller/controller.go updateSecret: the Secret it controls gets the
            # unsealed data, type, and the template's annotations, labels and ownerReferences
            updated = dict(current)
            m = dict(meta(current))
            for field in ("labels", "annotations", "ownerReferences"):
                if field in desired["metadata"]:
                    m[field] = desired["metadata"][field]
                else:
                    m.pop(field, None)
            updated["metadata"] = m
            updated["data"] = desired["data"]
            updated["type"] = desired["type"]
            updated.pop("stringData", None)
            if updated != current:
                self.kube.replace(SECRET, namespace, name, self._rewritten(updated))
        self.unsealed += 1
        self._event(ss, "Normal", SUCCESS_UNSEALED, "SealedSecret unsealed successfully")
        log.info("sealed-secrets: %s/%s unsealed", namespace, name)
        return None

    def _rewritten(self, secret: Obj) -> Obj:
        return secret if self.rewrite_secret is None else self.rewrite_secret(secret)

    def _decrypt(self, ss: Obj) -> dict[str, bytes]:
        if self.fail_unseal:
            raise UnsealError(self.fail_unseal)
        return unseal_manifest(ss, self.private_keys)

    @staticmethod
    def _secret_for(ss: Obj, items: dict[str, bytes]) -> Obj:
        """pkg/apis/sealedsecrets/v1alpha1/sealedsecret_expansion.go ``Unseal``: the Secret's
        metadata is a copy of ``spec.template.metadata`` (so rotator's key-fingerprint
        annotation lands on the Secret with the value it describes), its name and namespace the
        SealedSecret's, an ownerReference to it with ``controller: true``."""
        m = meta(ss)
        template = (ss.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        metadata: Obj = {"name": m["name"], "namespace": m["namespace"]}
        if tmeta.get("labels"):
            metadata["labels"] = dict(tmeta["labels"])
        if tmeta.get("annotations"):
            metadata["annotations"] = dict(tmeta["annotations"])
        metadata["ownerReferences"] = [
            {
                "apiVersion": SEALED_SECRET.api_version,
                "kind": SEALED_SECRET.kind,
                "name": m["name"],
                "uid": m.get("uid", ""),
                "controller": True,
            }
        ]
        return {
            "metadata": metadata,
            "type": template.get("type") or "Opaque",
            "data": {k: base64.b64encode(v).decode() for k, v in sorted(items.items())},
        }

    def _update_status(self, ss: Obj, err: str | None) -> None:
        """``updateSealedSecretStatus`` of ``self.version`` (see the module docstring)."""
        if not self.update_status:
            return  # --update-status=false: "not updating status because ... not turned on"
        status = dict(ss.get("status") or {})
        generation = meta(ss).get("generation")
        if self.version == V0_24_1 and status.get("observedGeneration") == generation:
            return  # <= v0.24.1: "already observed it from the current generation"
        conditions = [dict(c) for c in status.get("conditions") or []]
        changed = _set_synced(conditions, err)
        if self.version == V0_24_2:
            write = changed  # v0.24.2: observedGeneration set, but written only with a change
        elif self.version == V0_24_1:
            write = True
        else:
            write = changed or status.get("observedGeneration") != generation
        if not write:
            return
        ns, name = str(meta(ss)["namespace"]), str(meta(ss)["name"])
        if self.before_status_write is not None:
            self.before_status_write(ss)
        body = dict(ss, status={"observedGeneration": generation, "conditions": conditions})
        try:
            # UpdateStatus of the object as read: a write by anyone since -> 409 Conflict
            self.kube.replace_status(SEALED_SECRET, ns, name, body)
        except Exception as exc:
            # "Error updating SealedSecret status": non-fatal, logged, never retried
            if api_status(exc) != 404:
                log.warning("sealed-secrets: %s/%s: status update failed: %s", ns, name, exc)

    def _event(self, obj: Obj, etype: str, reason: str, message: str) -> None:
        if self.drop_events:
            return  # lost on the way (see drop_events in the module docstring)
        m = meta(obj)
        now = now_rfc3339()
        event = {
            "metadata": {
                "name": f"{m['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": m["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", SEALED_SECRET.api_version),
                "kind": obj.get("kind", SEALED_SECRET.kind),
                "name": m["name"],
                "namespace": m["namespace"],
                "uid": m.get("uid", ""),
                "resourceVersion": m.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(EVENT, str(m["namespace"]), event)
        except Exception as exc:
            log.debug("sealed-secrets: event not recorded: %s", exc)


def _set_synced(conditions: list[Obj], err: str | None) -> bool:
    """``updateSealedSecretsStatusConditions``: set the Synced condition in place; True when its
    status changed (then ``lastTransitionTime`` moves too)."""
    cond = next((c for c in conditions if c.get("type") == "Synced"), None)
    if cond is None:
        cond = {"type": "Synced"}
        conditions.append(cond)
    new_status = "True" if err is None else "False"
    if err is None:
        cond.pop("message", None)
    else:
        cond["message"] = err
    now = now_rfc3339()
    cond["lastUpdateTime"] = now
    if cond.get("status") == new_status:
        return False
    cond["lastTransitionTime"] = now
    cond["status"] = new_status
    return True


def _controlled_by(secret: Obj, ss: Obj) -> bool:
    uid = meta(ss).get("uid")
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in meta(secret).get("ownerReferences") or []
    )
