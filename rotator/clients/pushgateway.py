"""Prometheus Pushgateway: where a CronJob, which lives too briefly to be scraped, leaves its
metrics (``metrics.pushgateway_url``).

The push is a POST to ``{url}/metrics/job/{job}`` with the text exposition format (the same text
``--metrics-file`` writes). POST, not PUT: the Pushgateway then replaces only the metric names
in this push and keeps the others of the group, so a failed run, which carries no
``rotator_last_success_timestamp_seconds``, leaves the last success time in place. That is what
the "no success in N days" alert reads (prometheus/pushgateway README, "POST method"; the
client libraries call it push-add). A CronJob has no file to carry that time across runs, so
PUT would erase it on every failure.

Counters and "last time" gauges carry over from run to run through the gateway itself: before
the push, ``GET {url}/metrics`` reads what the gateway holds (it exposes every group's metrics,
each sample labelled with its grouping key ``job``: prometheus/pushgateway README, "About the
job and instance labels") and ``rotator.metrics`` adds this run. When that read fails the push
still goes out: counters then restart from this run (Prometheus' ``rate`` and ``increase``
treat a drop as a counter reset) and the missing gauges stay as the gateway has them.

Pushing the same text twice leaves the same state, so the push is sent as an idempotent call
and retried on transients by ``clients.transport.request``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from rotator.clients.transport import RetryPolicy, request
from rotator.errors import PushgatewayError
from rotator.names import COMPONENT

if TYPE_CHECKING:
    from rotator.clock import Clock
    from rotator.config import Config
    from rotator.report import RunReport

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_JOB = COMPONENT
PUSH_RETRY = RetryPolicy(attempts=3)
_JOB = re.compile(r"^[A-Za-z0-9_.:-]+$")


def push_metrics(
    url: str,
    text: str,
    *,
    job: str = DEFAULT_JOB,
    timeout: tuple[float, float],
    replace: bool = False,
    retry: RetryPolicy = PUSH_RETRY,
    clock: Clock | None = None,
    session: requests.Session | None = None,
) -> None:
    """Push Prometheus text to the Pushgateway's group ``job=<job>``.

    ``replace=True`` sends PUT (the whole group is replaced); the default POST replaces only
    the metric names present in ``text``. Raises ``PushgatewayError``.
    """
    if not _JOB.match(job):
        # A '/' would start a grouping label in the path; keep job names plain.
        raise ValueError(f"Pushgateway job name {job!r}: use letters, digits, '_', '.', ':', '-'")
    if text and not text.endswith("\n"):
        text += "\n"  # the text format needs a final line feed
    target = f"{url.rstrip('/')}/metrics/job/{quote(job, safe='')}"
    own = session is None
    http = session or requests.Session()
    try:
        request(
            http,
            "PUT" if replace else "POST",
            target,
            what=f"push metrics to the Pushgateway (job {job})",
            error=PushgatewayError,
            timeout=timeout,
            idempotent=True,
            retry=retry,
            clock=clock,
            data=text.encode(),
            headers={"Content-Type": CONTENT_TYPE},
        )
    finally:
        if own:
            http.close()


def read_metrics(
    url: str,
    *,
    timeout: tuple[float, float],
    retry: RetryPolicy = PUSH_RETRY,
    clock: Clock | None = None,
    session: requests.Session | None = None,
) -> str:
    """The gateway's ``/metrics`` text (every group's samples). Raises ``PushgatewayError``."""
    own = session is None
    http = session or requests.Session()
    try:
        response = request(
            http,
            "GET",
            f"{url.rstrip('/')}/metrics",
            what="read the metrics the Pushgateway holds",
            error=PushgatewayError,
            timeout=timeout,
            idempotent=True,
            retry=retry,
            clock=clock,
        )
        return response.text
    finally:
        if own:
            http.close()


def push_report(config: Config, report: RunReport, *, clock: Clock | None = None) -> bool:
    """Push one run's metrics if ``metrics.pushgateway_url`` is set; True when pushed.

    Metrics are best effort: a Pushgateway that is down is logged as a warning and never
    changes the run's outcome or exit code.
    """
    from rotator.metrics import Carried, carry_over, parse, render

    url = config.metrics.pushgateway_url
    if url is None:
        return False
    timeout = (config.timeouts.connect_s, config.timeouts.read_s)
    retry = RetryPolicy(attempts=config.timeouts.attempts)
    try:
        previous = parse(
            read_metrics(url, timeout=timeout, retry=retry, clock=clock), job=DEFAULT_JOB
        )
    except PushgatewayError as exc:
        if exc.retryable:  # down after the retries: a push now would only wait as long again
            log.warning("metrics not pushed: %s", exc)
            return False
        log.warning("previous metrics not read (%s): the run counters restart from this run", exc)
        previous = Carried()
    try:
        push_metrics(
            url,
            render(report, carry_over(previous, report)),
            timeout=timeout,
            retry=retry,
            clock=clock,
        )
    except PushgatewayError as exc:
        log.warning("metrics not pushed: %s", exc)
        return False
    log.info("metrics pushed to the Pushgateway (job %s)", DEFAULT_JOB)
    return True
