"""PURE: the run report and its renderings (text, JSON, Slack Block Kit; metrics: ``metrics``).

The runner fills a ``RunReport``; nothing here does I/O. Reports hold fingerprints, never keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from rotator.errors import ExitCode
from rotator.steps import Step


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    INCONCLUSIVE = "inconclusive"
    ABORTED = "aborted-nothing-changed"
    FAILED_AFTER_RESET = "failed-after-reset"
    FAILED = "failed"
    LOCKED = "locked"
    DRY_RUN = "dry-run"


class StepStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    DRY_RUN = "dry-run"
    NOT_RUN = "not-run"


STEP_TITLES: Mapping[Step, str] = {
    Step.PREFLIGHT: "Preflight checks",
    Step.LOCK: "Run lock (Lease)",
    Step.ROTATE: "Reset the PostHog key",
    Step.SEAL: "Seal the new key",
    Step.PUSH: "Commit and push",
    Step.ARGOCD: "ArgoCD sync of the commit",
    Step.UNSEAL: "Controller unseal",
    Step.ROLLOUT: "Gateway restart and rollout",
    Step.VERIFY: "Live Events check",
    Step.REPORT: "Report",
}

EXIT_CODES: Mapping[Outcome, ExitCode] = {
    Outcome.SUCCEEDED: ExitCode.OK,
    Outcome.DRY_RUN: ExitCode.OK,
    Outcome.INCONCLUSIVE: ExitCode.FAILED,
    Outcome.FAILED_AFTER_RESET: ExitCode.FAILED,
    Outcome.FAILED: ExitCode.FAILED,
    Outcome.ABORTED: ExitCode.ABORTED,
    Outcome.LOCKED: ExitCode.LOCKED,
}

_ICONS: Mapping[StepStatus, str] = {
    StepStatus.OK: "ok",
    StepStatus.SKIPPED: "--",
    StepStatus.FAILED: "FAIL",
    StepStatus.INCONCLUSIVE: "??",
    StepStatus.DRY_RUN: "dry",
    StepStatus.NOT_RUN: "..",
}

_SLACK_ICONS: Mapping[StepStatus, str] = {
    StepStatus.OK: ":white_check_mark:",
    StepStatus.SKIPPED: ":heavy_minus_sign:",
    StepStatus.FAILED: ":x:",
    StepStatus.INCONCLUSIVE: ":grey_question:",
    StepStatus.DRY_RUN: ":test_tube:",
    StepStatus.NOT_RUN: ":white_circle:",
}

_HEADLINES: Mapping[Outcome, str] = {
    Outcome.SUCCEEDED: "PostHog key rotated and verified",
    Outcome.INCONCLUSIVE: "PostHog key rotated; gateway traffic not seen in time (inconclusive)",
    Outcome.ABORTED: "Rotation aborted before any change",
    Outcome.FAILED_AFTER_RESET: "Rotation FAILED after the key reset: production needs the resume",
    Outcome.FAILED: "Rotation failed",
    Outcome.LOCKED: "Rotation not started: another rotation is in progress",
    Outcome.DRY_RUN: "Dry run: nothing was changed",
}


@dataclass(frozen=True)
class StepResult:
    step: Step
    status: StepStatus
    detail: str
    env: str | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class EventCounts:
    """What the Live Events check saw (and, in the sandbox, what the stand-in counted)."""

    marker_seen_after_s: float | None = None
    gateway_events: Mapping[str, int] = field(default_factory=dict)
    sent: int | None = None
    ingested: int | None = None
    dropped: int | None = None


@dataclass(frozen=True)
class KeyChange:
    """One PostHog project's key in a run: fingerprints before and after."""

    project_id: int
    envs: tuple[str, ...]
    old: str | None
    new: str | None


@dataclass(frozen=True)
class RunReport:
    run_id: str
    trigger: str
    mode: str
    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    envs: tuple[str, ...]
    steps: tuple[StepResult, ...]
    fingerprints: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    commit: str | None = None
    reset_at: datetime | None = None
    dark_window_s: float | None = None
    ingestion_window_s: float | None = None
    error: str | None = None
    broken_now: str | None = None
    resume_command: str | None = None
    events: EventCounts = EventCounts()
    slack: str | None = None
    plan: tuple[str, ...] = ()
    # Everything unusual the run saw and got past (a retried request or push, a lost Lease, a
    # failed poll), in the order seen: the report is complete without the log.
    anomalies: tuple[str, ...] = ()
    # A new key ended this run rolled out and verified (reset here or by the run it resumed).
    rotated: bool = False
    # PostHog project id -> when its current key was set (the reset, or the rotation commit).
    key_since: Mapping[str, datetime] = field(default_factory=dict)
    # Per project (the JSON report's ``fingerprints``); ``fingerprints`` above is the same by
    # "project N" label, for the text and Slack renderings.
    keys: tuple[KeyChange, ...] = ()
    # The resume as argument lists (run as they are, no shell): rotator, and a one-off Job.
    resume_argv: tuple[str, ...] = ()
    resume_job_argv: tuple[str, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.outcome]

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def step_durations(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for result in self.steps:
            totals[result.step.value] = totals.get(result.step.value, 0.0) + result.duration_s
        return totals


def headline(report: RunReport) -> str:
    """PURE: one line for the outcome; a success without a reset does not claim a rotation."""
    if report.mode == "verify" and report.outcome is Outcome.FAILED:
        return "PostHog key verification FAILED"
    if report.outcome is not Outcome.SUCCEEDED or report.reset_at is not None:
        return _HEADLINES[report.outcome]
    if report.mode == "verify":
        return "PostHog key verified"
    rolled = any(
        r.step in (Step.PUSH, Step.ROLLOUT) and r.status is StepStatus.OK for r in report.steps
    )
    if rolled:
        return "PostHog's current key rolled out and verified (no reset in this run)"
    return "PostHog key verified; no reset in this run"


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _fingerprint_lines(report: RunReport) -> list[str]:
    return [
        f"{proj}: {old or '?'} -> {new or '?'}"
        for proj, (old, new) in sorted(report.fingerprints.items())
    ]


def to_text(report: RunReport) -> str:
    """PURE: the report for a terminal or a log."""
    lines = [
        f"rotator run {report.run_id} ({report.trigger}, {report.mode}): "
        f"{report.outcome.value.upper()}",
        f"  {headline(report)}",
    ]
    if report.error:
        lines.append(f"  error: {report.error}")
    if report.broken_now:
        lines.append(f"  broken now: {report.broken_now}")
    if report.resume_command:
        lines.append(f"  resume with: {report.resume_command}")
    lines.append(f"  environments: {', '.join(report.envs) or '-'}")
    lines.extend(f"  key {line}" for line in _fingerprint_lines(report))
    if report.commit:
        lines.append(f"  commit: {report.commit}")
    if report.dark_window_s is not None:
        window = (
            f" (PostHog keeps old-key events for {report.ingestion_window_s:.0f}s)"
            if report.ingestion_window_s is not None
            else ""
        )
        lines.append(f"  dark window: {report.dark_window_s:.1f}s{window}")
    ev = report.events
    if ev.marker_seen_after_s is not None:
        lines.append(f"  marker event read back after {ev.marker_seen_after_s:.1f}s")
    for env, count in sorted(ev.gateway_events.items()):
        lines.append(f"  gateway events on the new key ({env}): {count}")
    if ev.sent is not None:
        lines.append(f"  events sent {ev.sent}, ingested {ev.ingested}, dropped {ev.dropped}")
    if report.anomalies:
        lines.append("  anomalies:")
        lines.extend(f"    {a}" for a in report.anomalies)
    if report.plan:
        lines.append("  plan:")
        lines.extend(f"    {p}" for p in report.plan)
    lines.append("  steps:")
    for r in report.steps:
        where = f" [{r.env}]" if r.env else ""
        lines.append(
            f"    {_ICONS[r.status]:>4}  {STEP_TITLES[r.step]}{where}  "
            f"{_fmt_s(r.duration_s)}  {r.detail}"
        )
    lines.append(f"  took {report.duration_s:.1f}s; slack: {report.slack or '-'}")
    return "\n".join(lines)


def key_changes(report: RunReport) -> tuple[KeyChange, ...]:
    """PURE: the per-project keys; for a report built with only ``fingerprints`` labels, parsed
    from "project N"."""
    if report.keys:
        return report.keys
    changes = []
    for label, (old, new) in sorted(report.fingerprints.items()):
        digits = label.removeprefix("project ").strip()
        changes.append(KeyChange(int(digits) if digits.isdigit() else 0, (), old, new))
    return tuple(changes)


def to_json(report: RunReport) -> dict[str, Any]:
    """PURE: the report as a JSON-able dict, by the published contract (``rotator.contract``)."""
    from rotator.contract import EventsDoc, KeyDoc, ResumeDoc, RunReportDoc, StepDoc

    ev = report.events
    resume = None
    if report.resume_argv:
        resume = ResumeDoc(
            argv=list(report.resume_argv),
            job_argv=list(report.resume_job_argv),
            note=report.resume_command or "",
        )
    doc = RunReportDoc(
        run_id=report.run_id,
        trigger=report.trigger,
        mode=report.mode,
        outcome=report.outcome.value,
        exit_code=int(report.exit_code),
        started_at=report.started_at,
        finished_at=report.finished_at,
        duration_s=report.duration_s,
        envs=list(report.envs),
        steps=[
            StepDoc(
                step=s.step,
                status=s.status.value,
                detail=s.detail,
                env=s.env,
                duration_s=s.duration_s,
            )
            for s in report.steps
        ],
        fingerprints=[
            KeyDoc(project_id=k.project_id, environments=list(k.envs), old=k.old, new=k.new)
            for k in key_changes(report)
        ],
        commit=report.commit,
        reset_at=report.reset_at,
        dark_window_s=report.dark_window_s,
        ingestion_window_s=report.ingestion_window_s,
        error=report.error,
        broken_now=report.broken_now,
        resume_command=report.resume_command,
        resume=resume,
        events=EventsDoc(
            marker_seen_after_s=ev.marker_seen_after_s,
            gateway_events=dict(ev.gateway_events),
            sent=ev.sent,
            ingested=ev.ingested,
            dropped=ev.dropped,
        ),
        slack=report.slack,
        plan=list(report.plan),
        anomalies=list(report.anomalies),
        rotated=report.rotated,
        key_since=dict(report.key_since),
    )
    return doc.model_dump(mode="json")


def to_json_text(report: RunReport) -> str:
    return json.dumps(to_json(report), indent=2, sort_keys=True)


# Block Kit's limits (api.slack.com/reference/block-kit/blocks): 50 blocks per message, 3000
# characters of section text, 2000 per field and at most 10 fields, 150 of header text.
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT = 3000
SLACK_FIELD_TEXT = 2000
SLACK_HEADER_TEXT = 150


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters (api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int = SLACK_SECTION_TEXT) -> str:
    """Escape, then truncate to ``limit`` with a marker that says how much was cut."""
    text = _escape(text)
    if len(text) <= limit:
        return text
    marker = f"... ({len(text) - limit} more chars in the job's log)"
    return _cut(text, limit - len(marker)) + marker


def _cut(text: str, limit: int) -> str:
    """The longest prefix of at most ``limit`` characters that ends outside an ``&...;``."""
    head = text[:limit]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head


def _chunks(text: str, limit: int) -> list[str]:
    """Escaped ``text`` split into pieces of at most ``limit``, at a line or word break when
    there is one: nothing is dropped (for the lines that must never be truncated)."""
    text = _escape(text)
    pieces: list[str] = []
    while len(text) > limit:
        head = _cut(text, limit)
        brk = max(head.rfind("\n"), head.rfind(" "))
        if brk > limit // 2:
            head = head[: brk + 1]
        pieces.append(head)
        text = text[len(head) :]
    pieces.append(text)
    return pieces


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _whole_sections(label: str, text: str, *, code: bool = False) -> list[dict[str, Any]]:
    """``label`` and all of ``text`` in as many sections as it takes (never truncated)."""
    fence = "```" if code else ""
    room = SLACK_SECTION_TEXT - len(label) - 2 - 2 * len(fence)
    pieces = _chunks(text, room)
    return [
        _section(f"{label if i == 0 else ''}\n{fence}{piece}{fence}".lstrip("\n"))
        for i, piece in enumerate(pieces)
    ]


def to_slack(report: RunReport, *, mention: str | None = None) -> dict[str, Any]:
    """PURE: one Block Kit message for the run (Slack incoming webhook payload).

    What to do comes first and whole: *Broken now* and *Resume* are never truncated (split
    over several sections if they are long); the error, the fields and the step list are
    truncated to Block Kit's limits instead, with the full text in the job's log.
    """
    title = headline(report)
    failed = report.outcome in (Outcome.FAILED_AFTER_RESET, Outcome.FAILED)
    prefix = f"{mention} " if mention and failed else ""
    fields = [
        f"*Outcome*\n{report.outcome.value}",
        f"*Run*\n{report.run_id} ({report.trigger}, {report.mode})",
        f"*Environments*\n{', '.join(report.envs) or '-'}",
        f"*Dark window*\n{_fmt_s(report.dark_window_s)}",
    ]
    if report.commit:
        fields.append(f"*Commit*\n`{report.commit[:12]}`")
    if report.fingerprints:
        fields.append("*Key*\n" + "\n".join(_fingerprint_lines(report)))
    header = {"type": "header", "text": {"type": "plain_text", "text": title[:SLACK_HEADER_TEXT]}}
    must: list[dict[str, Any]] = []
    if report.broken_now:
        must += _whole_sections("*Broken now:*", report.broken_now)
    if report.resume_command:
        must += _whole_sections("*Resume:*", report.resume_command, code=True)
    rest: list[dict[str, Any]] = []
    if report.error:
        rest.append(_section(_mrkdwn(f"*Error:* {report.error}")))
    rest.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _mrkdwn(f, SLACK_FIELD_TEXT - 100)} for f in fields[:10]
            ],
        }
    )
    if report.anomalies:
        text = "*Anomalies*\n" + "\n".join(f"• {a}" for a in report.anomalies)
        rest.append(_section(_mrkdwn(text)))
    step_lines = [
        f"{_SLACK_ICONS[r.status]} {STEP_TITLES[r.step]}{f' [{r.env}]' if r.env else ''} "
        f"({_fmt_s(r.duration_s)}) {r.detail}"
        for r in report.steps
    ]
    rest.append(_section(_mrkdwn("\n".join(step_lines) or "-")))
    context = {
        "type": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": _mrkdwn(
                    f"rotator · started {report.started_at.isoformat(timespec='seconds')} · "
                    f"took {report.duration_s:.0f}s",
                    300,
                ),
            }
        ],
    }
    # The block budget goes to what must be whole first; what does not fit is dropped from
    # the end of the optional blocks (the error stays as long as there is any room).
    room = SLACK_MAX_BLOCKS - 2 - len(must)
    blocks = [header, *must, *rest[: max(room, 0)], context]
    return {"text": f"{prefix}{title} ({report.outcome.value})", "blocks": blocks}
