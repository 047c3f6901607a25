"""Every HTTP call has a deadline for the whole answer, not only per socket read.

A server that trickles its answer (a byte every 0.2 s, so no single read ever times out) would
hold a call, a run and its Lease for as long as it likes; the helper shared by every client
(rotator/clients/transport.py) cuts the call at its deadline.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from rotator.clients.posthog import PostHogClient
from rotator.clients.transport import RetryPolicy, request
from rotator.errors import PostHogError, ResetOutcomeUnknown
from rotator.names import ProjectId
from rotator.redact import Secret

TRICKLE_BYTES = 60  # at 0.2 s each: a whole answer takes 12 s, every read well under 1 s
BODY = b'{"id": 1, "name": "x", "api_token": "phc_' + b"a" * 40 + b'"}'


def _trickle(conn: socket.socket, data: bytes, stop: threading.Event) -> None:
    with conn:
        for i in range(len(data)):
            if stop.wait(0.2):
                return
            try:
                conn.sendall(data[i : i + 1])
            except OSError:
                return


@pytest.fixture(name="trickler")
def trickler_fixture(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback HTTP server answering one byte every 0.2 s: headers, or the body."""
    where = getattr(request, "param", "body")
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(5)
            conn.recv(65536)
            body = BODY + b" " * TRICKLE_BYTES
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            if where == "headers":
                pad = b"X-Pad: " + b"p" * TRICKLE_BYTES + b"\r\n"
                data = head[:-2] + pad + b"\r\n" + body
                threading.Thread(
                    target=_trickle, args=(conn, data, stop), name="trickle-h", daemon=True
                ).start()
            else:
                conn.sendall(head)
                threading.Thread(
                    target=_trickle, args=(conn, body, stop), name="trickle-b", daemon=True
                ).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for worker in list(threading.enumerate()):
            if worker.name.startswith("trickle-"):
                worker.join(timeout=5)


@pytest.mark.parametrize("trickler", ["body", "headers"], indirect=True)
def test_a_trickling_answer_is_cut_at_the_calls_deadline(trickler: str) -> None:
    with requests.Session() as session, pytest.raises(PostHogError) as caught:
        request(
            session,
            "GET",
            trickler + "/api/projects/1/",
            what="read PostHog project 1",
            error=PostHogError,
            timeout=(1.0, 1.0),
            idempotent=True,
            retry=RetryPolicy(attempts=1),
            deadline_s=1.5,
        )
    assert "no complete answer within its 2s deadline" in str(caught.value)
    assert caught.value.retryable


def test_the_default_deadline_is_connect_plus_read_timeout(trickler: str) -> None:
    client = PostHogClient(
        app_host=trickler,
        ingest_host=trickler,
        personal_key=Secret("phx_fake_test_fixture_key_0123456789"),
        timeout=(0.5, 1.0),
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(PostHogError, match="deadline"):
        client.get_project(ProjectId(1))


def test_a_trickling_reset_answer_is_an_unknown_outcome_not_a_failure(trickler: str) -> None:
    client = PostHogClient(
        app_host=trickler,
        ingest_host=trickler,
        personal_key=Secret("phx_fake_test_fixture_key_0123456789"),
        timeout=(0.5, 1.0),
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(ResetOutcomeUnknown, match="Do not reset again"):
        client.reset_key(ProjectId(1))
