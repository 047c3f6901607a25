"""A Slack incoming-webhook receiver on loopback that answers like Slack.

Slack's documented webhook answers ("Sending messages using incoming webhooks", Handling
errors): 200 with the body ``ok``; 400 ``invalid_payload`` for a body that is not JSON,
``no_text`` when neither ``text`` nor ``blocks`` is given, ``invalid_blocks`` for blocks Slack's
Block Kit validation rejects; 404 ``no_service`` for a webhook URL that does not exist (revoked
or mistyped); 429 with ``Retry-After`` when rate limited. The block checks are a subset of Block
Kit's limits: at most 50 blocks, a known ``type`` on every block, section text up to 3000
characters, header text (plain_text) up to 150 characters, context up to 10 elements.

Fault hooks: ``fail_next(n, status=429, retry_after=1)`` answers the next ``n`` posts with a
429 (and ``Retry-After``) or a 5xx; ``set_path_valid(False)`` makes the URL answer 404 like a
revoked webhook.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rotator.redact import Secret

BLOCK_TYPES = frozenset(
    {
        "section",
        "divider",
        "header",
        "context",
        "actions",
        "image",
        "input",
        "rich_text",
        "file",
        "video",
        "markdown",
    }
)
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_BODY = 1_000_000


@dataclass(frozen=True)
class Delivery:
    """One accepted post: the JSON payload and the Slack answer."""

    payload: dict[str, Any]
    status: int
    body: str


def blocks_error(blocks: Any) -> str | None:
    """Why Slack would reject these blocks, or None when they pass (pure)."""
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > MAX_BLOCKS:
        return f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}"
        if not isinstance(block, dict) or "type" not in block:
            return f"missing required field: type {where}]"
        kind = block["type"]
        if kind not in BLOCK_TYPES:
            return f"unsupported type: {kind} {where}/type]"
        text = block.get("text")
        if kind == "section":
            fields = block.get("fields")
            if text is None and not fields:
                return f"must provide text or fields {where}]"
            if text is not None:
                err = _text_error(text, MAX_SECTION_TEXT, f"{where}/text")
                if err:
                    return err
        elif kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                return f"must be a plain_text object {where}/text]"
            err = _text_error(text, MAX_HEADER_TEXT, f"{where}/text")
            if err:
                return err
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                return f"must provide elements {where}/elements]"
            if len(elements) > MAX_CONTEXT_ELEMENTS:
                return f"no more than {MAX_CONTEXT_ELEMENTS} items allowed {where}/elements]"
    return None


def _text_error(text: Any, limit: int, where: str) -> str | None:
    if not isinstance(text, dict) or text.get("type") not in ("plain_text", "mrkdwn"):
        return f"must be a text object {where}]"
    value = text.get("text")
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string {where}/text]"
    if len(value) > limit:
        return f"must be less than {limit + 1} characters {where}/text]"
    return None


class SlackReceiver:
    """Incoming-webhook stand-in; ``url`` is the webhook URL (a secret, like Slack's)."""

    def __init__(self, *, port: int = 0) -> None:
        self.path = f"/services/T000/B000/{secrets.token_urlsafe(18)}"
        self._port = port
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._attempts = 0
        self._faults: list[tuple[int, float | None]] = []
        self._path_valid = True
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SlackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, MAX_BODY)) if length else b""
                status, body, headers = receiver._answer(self.path, raw)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.send_response(400 if self.path == receiver.path else 404)
                data = b"invalid_payload" if self.path == receiver.path else b"no_service"
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SlackReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> Secret:
        """The webhook URL; its path is the credential, so it is wrapped as a Secret."""
        return Secret(self.base_url + self.path)

    # -- fault hooks ---------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 429, retry_after: float = 1) -> None:
        """Answer the next ``count`` posts with ``status`` (429 carries ``Retry-After``)."""
        with self._lock:
            self._faults.extend([(status, retry_after if status == 429 else None)] * count)

    def set_path_valid(self, valid: bool) -> None:
        """False: the webhook answers 404 ``no_service``, like a revoked URL."""
        self._path_valid = valid

    # -- what arrived --------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """Payloads Slack would have shown (answered 200)."""
        return [d.payload for d in self.deliveries if d.status == 200]

    @property
    def attempts(self) -> int:
        with self._lock:
            return self._attempts

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()
            self._attempts = 0

    # -- the answer ----------------------------------------------------------------------------

    def _answer(self, path: str, raw: bytes) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            self._attempts += 1
            if path != self.path or not self._path_valid:
                return 404, "no_service", {}
            if self._faults:
                status, retry_after = self._faults.pop(0)
                if status == 429:
                    return 429, "rate_limited", {"Retry-After": f"{retry_after:g}"}
                return status, "internal_error", {}
        status, body = self._validate(raw)
        payload: dict[str, Any] = {}
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                payload = parsed
        except ValueError:
            pass
        with self._lock:
            self._deliveries.append(Delivery(payload=payload, status=status, body=body))
        return status, body, {}

    @staticmethod
    def _validate(raw: bytes) -> tuple[int, str]:
        try:
            payload = json.loads(raw)
        except ValueError:
            return 400, "invalid_payload"
        if not isinstance(payload, dict):
            return 400, "invalid_payload"
        text = payload.get("text")
        blocks = payload.get("blocks")
        if not text and not blocks and not payload.get("attachments"):
            return 400, "no_text"
        if blocks is not None and blocks_error(blocks) is not None:
            return 400, "invalid_blocks"
        return 200, "ok"
