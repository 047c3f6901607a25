"""Logging set-up: text for terminals, JSON for the cluster; every line names step and env."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import shutil
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal

from rotator.redact import RedactingFilter, scrub

_step: contextvars.ContextVar[str] = contextvars.ContextVar("rotator_step", default="-")
_env: contextvars.ContextVar[str] = contextvars.ContextVar("rotator_env", default="-")
_run: contextvars.ContextVar[str] = contextvars.ContextVar("rotator_run", default="-")

# ``log.warning(..., extra=IN_REPORT)``: the line says what the report already says (a step's
# failure, the interrupt), so it is not an anomaly of its own.
IN_REPORT = {"in_report": True}
MAX_ANOMALIES = 20

LogFormat = Literal["text", "json"]


@contextlib.contextmanager
def log_context(
    *, step: str | None = None, env: str | None = None, run: str | None = None
) -> Iterator[None]:
    """Tag every log line inside the block with the step and/or environment (and run id)."""
    tokens = []
    if run is not None:
        tokens.append((_run, _run.set(run)))
    if step is not None:
        tokens.append((_step, _step.set(step)))
    if env is not None:
        tokens.append((_env, _env.set(env)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_env() -> str:
    """The environment the current context logs for ("-" outside one)."""
    return _env.get()


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "step"):
            record.step = _step.get()
        if not hasattr(record, "env"):
            record.env = _env.get()
        return True


class AnomalyCollector(logging.Handler):
    """Every warning or error one run logs, for its report: the report is complete when an
    anomaly is logged anywhere (a retried request, a rejected push, a lost Lease), not only
    where the runner thought of recording it. Only records logged in the run's context
    (``log_context(run=...)``, which the run's threads copy) count, so runs sharing a process
    keep apart. Identical lines are counted, not repeated; the list is capped."""

    def __init__(self, run_id: str) -> None:
        super().__init__(level=logging.WARNING)
        self._run_id = run_id
        self._seen: dict[str, int] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if _run.get() != self._run_id or getattr(record, "in_report", False):
            return
        step = getattr(record, "step", None) or _step.get()
        env = getattr(record, "env", None) or _env.get()
        where = step if env in ("-", "") else f"{step} [{env}]"
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not break the run
            message = str(record.msg)
        line = scrub(f"{where}: {message}" if where not in ("-", "") else message)
        with self._guard:
            self._seen[line] = self._seen.get(line, 0) + 1

    def anomalies(self) -> tuple[str, ...]:
        with self._guard:
            items = list(self._seen.items())
        lines = [f"{text} (x{count})" if count > 1 else text for text, count in items]
        if len(lines) > MAX_ANOMALIES:
            more = len(lines) - MAX_ANOMALIES + 1
            lines = [*lines[: MAX_ANOMALIES - 1], f"... and {more} more (see the log)"]
        return tuple(lines)


@contextlib.contextmanager
def collecting_anomalies(run_id: str) -> Iterator[AnomalyCollector]:
    """Collect the run's warnings from every ``rotator`` logger while the block runs."""
    collector = AnomalyCollector(run_id)
    logger = logging.getLogger("rotator")
    logger.addHandler(collector)
    try:
        with log_context(run=run_id):
            yield collector
    finally:
        logger.removeHandler(collector)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC, with its zone), ``level``,
    ``logger``, ``run_id``, ``step``, ``env``, ``message``; a report record (``log_report``)
    carries the whole JSON report under ``report``."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        report = getattr(record, "report", None)
        payload: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", None) or _run.get(),
            "step": getattr(record, "step", "-"),
            "env": getattr(record, "env", "-"),
            "message": getattr(record, "summary", None) if report else record.getMessage(),
        }
        if report is not None:
            payload["report"] = report
        if record.exc_info:
            payload["exception"] = scrub(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(payload, sort_keys=True)


class LiveLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Text logs on a terminal, with one live status line kept below them: each log line
    clears it, is written, and the status line is drawn again (``rotator.progress``)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._lines: dict[str, str] = {}
        self._drawn = False

    def show(self, key: str, text: str | None) -> None:
        """Set (or with None remove) one wait's part of the status line, and redraw it."""
        with self.lock or contextlib.nullcontext():
            if text is None:
                self._lines.pop(key, None)
            else:
                self._lines[key] = text
            self._clear()
            self._draw()

    def emit(self, record: logging.LogRecord) -> None:
        self._clear()
        super().emit(record)
        self._draw()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def _draw(self) -> None:
        if not self._lines:
            self.stream.flush()
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        text = "  |  ".join(self._lines.values())
        text = text if len(text) <= width else text[: width - 3] + "..."
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True


def live_lines() -> LiveLines | None:
    """The terminal's live status line, if logging goes to one (else None)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LiveLines) and handler.get_name() == "rotator":
            return handler
    return None


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(step)s/%(env)s] %(message)s"


def setup_logging(
    *, fmt: LogFormat = "text", level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing an earlier one of ours)."""
    out = stream or sys.stderr
    on_terminal = fmt == "text" and hasattr(out, "isatty") and out.isatty()
    handler = LiveLines(out) if on_terminal else logging.StreamHandler(out)
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
