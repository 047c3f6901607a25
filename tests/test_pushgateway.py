"""Pushing metrics to a loopback stand-in for the Prometheus Pushgateway.

The stand-in keeps one group per job with the Pushgateway's documented semantics: PUT replaces
the whole group, POST replaces only the metric names it carries (prometheus/pushgateway README).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rotator.clients.pushgateway import CONTENT_TYPE, PushgatewayError, push_metrics, push_report
from rotator.clients.transport import RetryPolicy
from rotator.config import load_config
from rotator.report import Outcome, RunReport, StepResult, StepStatus
from rotator.steps import Step

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
TIMEOUT = (2.0, 5.0)


def _families(text: str) -> dict[str, list[str]]:
    """metric name -> its lines (HELP/TYPE and samples), in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name = line.split()[2] if line.startswith("#") else line.split("{")[0].split()[0]
        out.setdefault(name, []).append(line)
    return out


@dataclass
class FakePushgateway:
    groups: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, content_type: str, body: str) -> tuple[int, str]:
        with self.lock:
            self.requests.append((method, path, content_type, body))
            if self.fail_next:
                return self.fail_next.pop(0), "push failed: fake outage\n"
            if method == "GET" and path == "/metrics":
                return 200, self.exposition()
            if not path.startswith("/metrics/job/"):
                return 404, "not found\n"
            job = path.removeprefix("/metrics/job/")
            if method == "PUT":
                self.groups[job] = _families(body)
            elif method == "POST":
                self.groups.setdefault(job, {}).update(_families(body))
            else:
                return 405, "method not allowed\n"
            return 200, ""

    def exposition(self) -> str:
        """``GET /metrics``: every group's samples with the grouping labels ``job`` and
        ``instance`` added (pushgateway README, "About the job and instance labels")."""
        out: list[str] = []
        for job, families in self.groups.items():
            for lines in families.values():
                for line in lines:
                    if line.startswith("#"):
                        out.append(line)
                        continue
                    name, _, rest = (
                        line.partition("{")
                        if "{" in line.split()[0]
                        else (line.split()[0], "", "} " + line.split()[1])
                    )
                    extra = f'job="{job}",instance=""'
                    out.append(f"{name}{{{extra}{',' if not rest.startswith('}') else ''}{rest}")
        return "\n".join(out) + "\n"

    def sample(self, job: str, name: str) -> str | None:
        for line in self.groups.get(job, {}).get(name, []):
            if not line.startswith("#"):
                return line.split()[-1]
        return None


@pytest.fixture
def gateway() -> Iterator[tuple[str, FakePushgateway]]:
    fake = FakePushgateway()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            status, text = fake.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), body
            )
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class NoSleep:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return 0.0

    def now(self) -> datetime:
        return T0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def run_report(outcome: Outcome, *, finished: datetime) -> RunReport:
    return RunReport(
        run_id="rot-1",
        trigger="cron",
        mode="rotate",
        outcome=outcome,
        started_at=finished - timedelta(seconds=60),
        finished_at=finished,
        envs=("preview", "prod"),
        steps=(StepResult(Step.PREFLIGHT, StepStatus.OK, "done", duration_s=1.5),),
        dark_window_s=12.0 if outcome is Outcome.SUCCEEDED else None,
    )


def test_push_posts_the_text_format_to_the_jobs_group(
    gateway: tuple[str, FakePushgateway],
) -> None:
    url, fake = gateway
    push_metrics(url + "/", "rotator_up 1", timeout=TIMEOUT)
    method, path, content_type, body = fake.requests[-1]
    assert (method, path) == ("POST", "/metrics/job/rotator")
    assert content_type == CONTENT_TYPE
    assert body == "rotator_up 1\n"


def test_replace_sends_put_and_drops_the_groups_other_metrics(
    gateway: tuple[str, FakePushgateway],
) -> None:
    url, fake = gateway
    push_metrics(url, "a 1\nb 2\n", job="j", timeout=TIMEOUT)
    push_metrics(url, "a 3\n", job="j", timeout=TIMEOUT, replace=True)
    assert fake.requests[-1][0] == "PUT"
    assert fake.sample("j", "a") == "3"
    assert fake.sample("j", "b") is None


def test_a_failed_run_keeps_the_last_success_time_in_the_gateway(
    gateway: tuple[str, FakePushgateway], tmp_path: Path
) -> None:
    url, fake = gateway
    config = _config(tmp_path, url)
    good = run_report(Outcome.SUCCEEDED, finished=T0)
    bad = run_report(Outcome.FAILED_AFTER_RESET, finished=T0 + timedelta(days=7))
    assert push_report(config, good)
    assert push_report(config, bad)
    assert float(fake.sample("rotator", "rotator_last_success_timestamp_seconds") or 0) == (
        T0.timestamp()
    )
    assert float(fake.sample("rotator", "rotator_last_run_timestamp_seconds") or 0) == (
        bad.finished_at.timestamp()
    )
    outcomes = fake.groups["rotator"]["rotator_last_run_outcome"]
    assert 'rotator_last_run_outcome{outcome="failed-after-reset"} 1.0' in outcomes
    assert 'rotator_last_run_outcome{outcome="succeeded"} 0.0' in outcomes


def test_run_counters_and_the_rotation_time_carry_over_through_the_gateway(
    gateway: tuple[str, FakePushgateway], tmp_path: Path
) -> None:
    # A CronJob pod holds no state between runs: the counts live in the gateway.
    url, fake = gateway
    config = _config(tmp_path, url)
    rotated = replace(run_report(Outcome.SUCCEEDED, finished=T0), rotated=True)
    adopt = replace(run_report(Outcome.SUCCEEDED, finished=T0 + timedelta(hours=1)), mode="adopt")
    failed = run_report(Outcome.ABORTED, finished=T0 + timedelta(days=7))
    for report in (rotated, adopt, failed, failed):
        assert push_report(config, report)
    assert [r[0] for r in fake.requests] == ["GET", "POST"] * 4
    runs = {
        line.split()[0]: float(line.split()[1])
        for line in fake.groups["rotator"]["rotator_runs_total"]
        if not line.startswith("#")
    }
    assert runs['rotator_runs_total{outcome="succeeded"}'] == 2
    assert runs['rotator_runs_total{outcome="aborted-nothing-changed"}'] == 2
    assert float(fake.sample("rotator", "rotator_last_rotation_timestamp_seconds") or 0) == (
        T0.timestamp()
    )
    assert float(fake.sample("rotator", "rotator_last_success_timestamp_seconds") or 0) == (
        adopt.finished_at.timestamp()
    )


def test_a_gateway_whose_metrics_cannot_be_read_still_gets_the_push(
    gateway: tuple[str, FakePushgateway], tmp_path: Path
) -> None:
    url, fake = gateway
    fake.fail_next = [404]  # the GET: a proxy that only forwards pushes
    assert push_report(config := _config(tmp_path, url), run_report(Outcome.FAILED, finished=T0))
    assert config.metrics.pushgateway_url
    assert [r[0] for r in fake.requests] == ["GET", "POST"]
    assert fake.sample("rotator", "rotator_runs_total") is not None


def test_a_transient_failure_is_retried_because_a_push_is_idempotent(
    gateway: tuple[str, FakePushgateway],
) -> None:
    url, fake = gateway
    fake.fail_next = [503, 502]
    clock = NoSleep()
    push_metrics(url, "x 1\n", timeout=TIMEOUT, clock=clock, retry=RetryPolicy(attempts=3))
    assert [r[0] for r in fake.requests] == ["POST", "POST", "POST"]
    assert len(clock.slept) == 2
    assert fake.sample("rotator", "x") == "1"


def test_a_rejected_push_raises_with_the_gateways_message(
    gateway: tuple[str, FakePushgateway],
) -> None:
    url, fake = gateway
    fake.fail_next = [400]
    with pytest.raises(PushgatewayError, match=r"HTTP 400: push failed: fake outage") as info:
        push_metrics(url, "x 1\n", timeout=TIMEOUT, clock=NoSleep())
    assert not info.value.retryable
    assert len(fake.requests) == 1


def test_a_gateway_that_is_down_never_fails_the_run(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")  # discard port: connection refused
    pushed = push_report(config, run_report(Outcome.SUCCEEDED, finished=T0), clock=NoSleep())
    assert pushed is False


def test_no_url_means_no_push(tmp_path: Path) -> None:
    config = _config(tmp_path, None)
    assert push_report(config, run_report(Outcome.SUCCEEDED, finished=T0)) is False


def test_a_job_name_with_a_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="job name"):
        push_metrics("http://127.0.0.1:9", "x 1\n", job="a/b", timeout=TIMEOUT)


def _config(tmp_path: Path, url: str | None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(
        "environments:\n"
        "  preview: {posthog_project_id: 1, namespace: align-preview,"
        " sealed_file: sealedsecrets/preview/posthog.yaml,"
        " argocd_app: {name: align-preview}, deployment: align-preview-gateway}\n"
        "git: {remote: /nonexistent}\n"
        "slack: {enabled: false}\n"
        "timeouts: {connect_s: 1, read_s: 2, attempts: 1}\n"
        f"metrics: {{pushgateway_url: {url or 'null'}}}\n"
    )
    return load_config(path, environ={})
