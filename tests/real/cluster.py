"""A real control plane for the real tier: etcd + kube-apiserver (+ kube-controller-manager) and
the real sealed-secrets controller, in a private network namespace of this machine.

Why a network namespace: the API server's service proxy (how rotator and kubeseal reach the
controller's ``/v1/cert.pem`` and ``/v1/verify``) refuses loopback endpoints (kubernetes
``pkg/apis/core/validation``: "may not be in the loopback range") and proxies only to an
address that the endpoint's ``targetRef`` Pod lists in ``status.podIPs``
(``pkg/registry/core/service/storage/storage.go`` ``isValidAddress``), read from EndpointSlices.
So every component listens on ``ADDRESS``, a non-loopback address on the namespace's own ``lo``,
which nothing outside this process's namespace can reach. Making a network namespace needs root
(CI runs as root); without it these tests skip saying so.

The namespace is entered per thread (``setns``): ``NetNs.inside()`` moves the calling thread in
and back out; threads and processes started inside stay inside. The control-plane processes are
started inside, and each test of the tier runs inside (tests/real/conftest.py).

Identities (a static token file, kube-apiserver ``--token-auth-file``; RBAC authorization on):
``admin`` (system:masters), the controller manager and the sealed-secrets controller
(system:masters: they are not what is under test), and ``rotator`` as the ServiceAccount
``rotator/rotator`` (cronjob.yaml) with no rights but those a test grants.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rotator_sandbox.unseal import ControllerKeyPair
from tests.real.peers import Peers

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
# A non-loopback address on the private namespace's lo (RFC 1918; nothing else uses it there).
ADDRESS = "10.209.0.1"
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
SERVICE_CIDR = "10.0.0.0/24"
CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_NAME = "sealed-secrets-controller"
CONTROLLER_PORT = 8080
START_TIMEOUT_S = 180.0  # the API server's first start on a loaded 2-core machine
ROTATOR_USER = "system:serviceaccount:rotator:rotator"  # cronjob.yaml's ServiceAccount


class RealTierUnavailable(Exception):
    """This machine cannot run the control plane (not root, no ``ip``): skip, saying why."""


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns a value (not None/False) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = predicate()
        except Exception as exc:  # a component still starting answers with errors
            value = None
            last_error = f" (last error: {type(exc).__name__}: {exc})"
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{last_error}")
        time.sleep(0.2)


# --- the network namespace ----------------------------------------------------------------


class NetNs:
    """A private network namespace with ``lo`` up and ``ADDRESS`` on it."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise RealTierUnavailable("a private network namespace (unshare -n) needs root")
        if shutil.which("ip") is None:
            raise RealTierUnavailable("the ip command (iproute2) is not installed")
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._depth = threading.local()
        self._host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        if self._libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise RealTierUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
        try:
            self._fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
            subprocess.run(
                ["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"], check=True, timeout=10
            )
        finally:
            self._setns(self._host)

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET) failed")

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The calling thread in the namespace for the block (re-entrant)."""
        if getattr(self._depth, "n", 0):
            self._depth.n += 1
            try:
                yield
            finally:
                self._depth.n -= 1
            return
        self._setns(self._fd)
        self._depth.n = 1
        try:
            yield
        finally:
            self._depth.n = 0
            self._setns(self._host)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._host)


# --- certificates and tokens --------------------------------------------------------------


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    """A throw-away CA, the API server's serving cert and the ServiceAccount signing key."""

    ca_pem: bytes
    serving_cert_pem: bytes
    serving_key_pem: bytes
    sa_key_pem: bytes
    sa_pub_pem: bytes

    @staticmethod
    def create() -> Pki:
        now = datetime.now(UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator-real-tier-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sans = [
            x509.DNSName(n)
            for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        ]
        sans += [x509.IPAddress(IPv4Address(ip)) for ip in (ADDRESS, "127.0.0.1", "10.0.0.1")]
        serving = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return Pki(
            ca_pem=ca.public_bytes(serialization.Encoding.PEM),
            serving_cert_pem=serving.public_bytes(serialization.Encoding.PEM),
            serving_key_pem=_pem_key(key),
            sa_key_pem=_pem_key(sa_key),
            sa_pub_pem=sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


@dataclass(frozen=True)
class Identity:
    user: str
    token: str
    groups: tuple[str, ...]


def identities() -> dict[str, Identity]:
    def tok() -> str:
        return secrets.token_hex(16)  # throw-away tokens of a throw-away cluster

    return {
        "admin": Identity("admin", tok(), ("system:masters",)),
        "controller-manager": Identity(
            "system:kube-controller-manager", tok(), ("system:masters",)
        ),
        "sealed-secrets": Identity(
            "system:serviceaccount:kube-system:sealed-secrets-controller",
            tok(),
            ("system:masters", "system:serviceaccounts", "system:serviceaccounts:kube-system"),
        ),
        "rotator": Identity(
            ROTATOR_USER,
            tok(),
            ("system:serviceaccounts", "system:serviceaccounts:rotator", "system:authenticated"),
        ),
    }


# --- processes ----------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def spawn(
    name: str, argv: list[str | Path], *, root: Path, env: dict[str, str] | None = None
) -> Process:
    log = root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True,
        )
    return Process(name, proc, log)


def _help(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--help"], capture_output=True, timeout=30, check=False)
    return (proc.stdout + proc.stderr).decode(errors="replace")


# --- the cluster --------------------------------------------------------------------------


@dataclass
class Cluster:
    """etcd + kube-apiserver (+ kube-controller-manager) in ``netns``; kubeconfigs per identity."""

    peers: Peers
    root: Path
    netns: NetNs
    pki: Pki = field(default_factory=Pki.create)
    ids: dict[str, Identity] = field(default_factory=identities)
    processes: list[Process] = field(default_factory=list)
    controller: Process | None = None
    controller_version: str = ""

    @property
    def url(self) -> str:
        return f"https://{ADDRESS}:{APISERVER_PORT}"

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    def kubeconfig(self, who: str = "admin") -> Path:
        return self.root / f"{who}.kubeconfig"

    # -- start/stop ------------------------------------------------------------------------

    def start(self, *, controller_manager: bool = False) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        files = {
            "ca.crt": self.pki.ca_pem,
            "apiserver.crt": self.pki.serving_cert_pem,
            "apiserver.key": self.pki.serving_key_pem,
            "sa.key": self.pki.sa_key_pem,
            "sa.pub": self.pki.sa_pub_pem,
        }
        for name, data in files.items():
            (self.root / name).write_bytes(data)
        tokens = "".join(
            f'{i.token},{i.user},{i.user},"{",".join(i.groups)}"\n' for i in self.ids.values()
        )
        (self.root / "tokens.csv").write_text(tokens)
        for who in self.ids:
            self._write_kubeconfig(who)
        with self.netns.inside():
            self._start_etcd()
            self._start_apiserver()
            if controller_manager:
                self._start_controller_manager()
        return self

    def stop(self) -> None:
        self.stop_controller()
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def _write_kubeconfig(self, who: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": who, "user": {"token": self.ids[who].token}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": who}}],
            "current-context": "real",
        }
        path = self.kubeconfig(who)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _ensure_alive(self, process: Process) -> None:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited {process.proc.returncode}:\n{process.tail()}"
            )

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
        peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        etcd = spawn(
            "etcd",
            [
                self.peers.etcd,
                "--name=real",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=real={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            root=self.root,
        )
        self.processes.append(etcd)

        def healthy() -> bool:
            self._ensure_alive(etcd)
            with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        wait_until(healthy, timeout=60, what="etcd to be healthy")

    def _start_apiserver(self) -> None:
        r = self.root
        apiserver = spawn(
            "kube-apiserver",
            [
                self.peers.kube("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
                f"--bind-address={ADDRESS}",
                f"--advertise-address={ADDRESS}",
                f"--secure-port={APISERVER_PORT}",
                f"--tls-cert-file={r / 'apiserver.crt'}",
                f"--tls-private-key-file={r / 'apiserver.key'}",
                f"--token-auth-file={r / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={r / 'sa.pub'}",
                f"--service-account-signing-key-file={r / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={r / 'apiserver-certs'}",
                "--profiling=false",
                "--v=1",
            ],
            root=r,
        )
        self.processes.append(apiserver)
        wait_until(
            lambda: self._readyz(apiserver),
            timeout=START_TIMEOUT_S,
            what="kube-apiserver /readyz",
        )

    def _readyz(self, apiserver: Process) -> bool:
        self._ensure_alive(apiserver)
        status, _ = self.http("GET", "/readyz")
        return status == 200

    def _start_controller_manager(self) -> None:
        kcm = spawn(
            "kube-controller-manager",
            [
                self.peers.kube("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authentication-kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authorization-kubeconfig={self.kubeconfig('controller-manager')}",
                # Only the Deployment and ReplicaSet controllers: the rest is simulated.
                "--controllers=deployment,replicaset",
                "--leader-elect=false",
                f"--bind-address={ADDRESS}",
                "--secure-port=10257",
                f"--service-account-private-key-file={self.root / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--v=1",
            ],
            root=self.root,
        )
        self.processes.append(kcm)

    # -- plain HTTP as admin (set-up only; tests use the real clients) ----------------------

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, Any]:
        """One request as admin; (status, parsed JSON or raw text)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.ids['admin'].token}",
                "Content-Type": content_type,
                "Accept": accept,
            },
        )
        try:
            with (
                self.netns.inside(),
                urllib.request.urlopen(req, timeout=30, context=context) as resp,
            ):
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, out = self.http(method, path, body, **kw)
        if status >= 300:
            raise AssertionError(f"{method} {path}: HTTP {status}: {out}")
        return out

    def apply(self, path: str, body: dict[str, Any]) -> Any:
        """Create at ``path`` (a collection), or replace when it exists."""
        status, out = self.http("POST", path, body)
        if status == 409:
            name = body["metadata"]["name"]
            current = self.ok("GET", f"{path}/{name}")
            body = dict(
                body,
                metadata=dict(
                    body["metadata"], resourceVersion=current["metadata"]["resourceVersion"]
                ),
            )
            return self.ok("PUT", f"{path}/{name}", body)
        if status >= 300:
            raise AssertionError(f"POST {path}: HTTP {status}: {out}")
        return out

    def ensure_namespace(self, name: str) -> None:
        status, out = self.http("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        if status not in (201, 409):
            raise AssertionError(f"namespace {name}: HTTP {status}: {out}")

    # -- the sealed-secrets controller -----------------------------------------------------

    def install_crd(self, version: str) -> None:
        crd = yaml.safe_load(self.peers.crd(version).read_text())
        self.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        self.wait_established(crd["metadata"]["name"])

    def wait_established(self, name: str) -> None:
        def established() -> bool:
            got = self.ok("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            return any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (got.get("status") or {}).get("conditions") or []
            )

        wait_until(established, timeout=60, what=f"CRD {name} to be established")

    def start_controller(self, version: str, key: ControllerKeyPair) -> Process:
        """The real controller of ``version`` with ``key`` as its only sealing key, in-cluster
        (its ServiceAccount files in a private mount namespace), behind a Pod-backed Service."""
        self.stop_controller()
        self.install_crd(version)
        self.ensure_namespace(CONTROLLER_NAMESPACE)
        self._install_key(key)
        sa = self.root / f"serviceaccount-{version}"
        sa.mkdir(exist_ok=True)
        (sa / "token").write_text(self.ids["sealed-secrets"].token)
        (sa / "ca.crt").write_bytes(self.pki.ca_pem)
        (sa / "namespace").write_text(CONTROLLER_NAMESPACE)
        mount_dir = "/run/secrets/kubernetes.io/serviceaccount"
        # rest.InClusterConfig reads fixed paths under /var/run/secrets: give the controller its
        # own /run (a private mount namespace), as a pod's kubelet-mounted volume would.
        script = (
            "set -e; mount -t tmpfs tmpfs /run; "
            f'mkdir -p {mount_dir}; cp "$1"/token "$1"/ca.crt "$1"/namespace {mount_dir}/; '
            'shift; exec "$@"'
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBERNETES_SERVICE_HOST": ADDRESS,
            "KUBERNETES_SERVICE_PORT": str(APISERVER_PORT),
        }
        argv: list[str | Path] = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            sa,
            self.peers.controller(version),
            f"--listen-addr={ADDRESS}:{CONTROLLER_PORT}",
            "--key-renew-period=0",
        ]
        if "listen-metrics-addr" in _help(self.peers.controller(version)):
            # Newer releases serve metrics on their own port (:8081 by default).
            argv.append(f"--listen-metrics-addr={ADDRESS}:{CONTROLLER_PORT + 1}")
        with self.netns.inside():
            process = spawn(f"sealed-secrets-{version}", argv, root=self.root, env=env)
        self.controller, self.controller_version = process, version
        self._register_controller_service(version)

        def serving() -> bool:
            self._ensure_alive(process)
            status, _ = self.http(
                "GET",
                f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/services/"
                f"http:{CONTROLLER_NAME}:http/proxy/v1/cert.pem",
            )
            return status == 200

        wait_until(serving, timeout=90, what=f"sealed-secrets {version} behind the service proxy")
        return process

    def stop_controller(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def _install_key(self, key: ControllerKeyPair) -> None:
        """The controller's key Secret (``sealedsecrets.bitnami.com/sealed-secrets-key: active``)
        before it starts, so it uses this key instead of generating one."""
        import base64

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "sealed-secrets-key-real",
                "namespace": CONTROLLER_NAMESPACE,
                "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"},
            },
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(key.cert_pem), "tls.key": b64(_pem_key(key.private_key))},
        }
        self.apply(f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/secrets", secret)

    def _register_controller_service(self, version: str) -> None:
        """What a real install has: the controller's Pod (Running, Ready, ``podIPs`` = its
        address), a Service selecting it and the EndpointSlice that the endpointslice
        controller would derive (written here when no controller manager runs)."""
        ns = CONTROLLER_NAMESPACE
        labels = {"name": CONTROLLER_NAME}
        pod_name = f"{CONTROLLER_NAME}-0"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
            "spec": {
                "serviceAccountName": "default",
                "automountServiceAccountToken": False,
                "nodeName": "real-node",
                "containers": [
                    {
                        "name": "controller",
                        "image": f"docker.io/bitnami/sealed-secrets-controller:{version}",
                        "ports": [{"name": "http", "containerPort": CONTROLLER_PORT}],
                    }
                ],
            },
        }
        self.ensure_default_service_account(ns)
        status, current = self.http("GET", f"/api/v1/namespaces/{ns}/pods/{pod_name}")
        if status == 404:
            current = self.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        current["status"] = {
            "phase": "Running",
            "podIP": ADDRESS,
            "podIPs": [{"ip": ADDRESS}],
            "hostIP": ADDRESS,
            "startTime": now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
        }
        pod_obj = self.ok("PUT", f"/api/v1/namespaces/{ns}/pods/{pod_name}/status", current)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": CONTROLLER_NAME, "namespace": ns, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 8080, "targetPort": CONTROLLER_PORT}],
            },
        }
        self.apply(f"/api/v1/namespaces/{ns}/services", service)
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{CONTROLLER_NAME}-real",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": CONTROLLER_NAME},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [ADDRESS],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": pod_name,
                        "uid": pod_obj["metadata"]["uid"],
                    },
                }
            ],
            "ports": [{"name": "http", "port": CONTROLLER_PORT, "protocol": "TCP"}],
        }
        slices = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        self.apply(slices, slice_)
        # Only this controller behind the Service (a test may have registered another).
        found = self.ok(
            "GET", f"{slices}?labelSelector=kubernetes.io/service-name%3D{CONTROLLER_NAME}"
        )
        for item in found.get("items") or []:
            if item["metadata"]["name"] != slice_["metadata"]["name"]:
                self.http("DELETE", f"{slices}/{item['metadata']['name']}")

    def ensure_default_service_account(self, namespace: str) -> None:
        status, _ = self.http("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        if status == 404:
            self.http(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"metadata": {"name": "default"}},
            )
