"""Logging set-up: text for terminals, JSON for the cluster; every line names step and env."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from typing import IO, Literal

from rotator.redact import RedactingFilter, scrub

_step: contextvars.ContextVar[str] = contextvars.ContextVar("rotator_step", default="-")
_env: contextvars.ContextVar[str] = contextvars.ContextVar("rotator_env", default="-")

LogFormat = Literal["text", "json"]


@contextlib.contextmanager
def log_context(*, step: str | None = None, env: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block with the step and/or environment."""
    tokens = []
    if step is not None:
        tokens.append((_step, _step.set(step)))
    if env is not None:
        tokens.append((_env, _env.set(env)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "step"):
            record.step = _step.get()
        if not hasattr(record, "env"):
            record.env = _env.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "step": getattr(record, "step", "-"),
            "env": getattr(record, "env", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = scrub(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(payload, sort_keys=True)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(step)s/%(env)s] %(message)s"


def setup_logging(
    *, fmt: LogFormat = "text", level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing an earlier one of ours)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("rotator")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "rotator":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 and kubernetes log request lines at DEBUG that may carry headers.
    for noisy in ("urllib3", "kubernetes", "git", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
