"""PURE: the JSON contract of rotator's output: typed models, their JSON Schema, a version.

``rotator run -o json`` (and ``verify``, ``demo``, the report record in the JSON log) prints a
``RunReportDoc``; ``rotator status -o json`` prints a ``StatusDoc``. The published schemas live
in ``schema/`` (``rotator schema report|status`` prints them; a test fails when the files are
not current). ``schema_version`` changes only for a change that breaks a reader: a removed or
renamed field, a changed type or meaning. Adding an optional field keeps the version.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rotator.steps import Step

SCHEMA_VERSION: Literal[1] = 1
SCHEMA_ID = "https://github.com/align/rotator/schema/{name}.schema.json"


class _Doc(BaseModel):
    # Readers must ignore fields they do not know: adding an optional one keeps the version.
    model_config = ConfigDict(frozen=True)


class StepDoc(_Doc):
    step: Step
    status: Literal["ok", "skipped", "failed", "inconclusive", "dry-run", "not-run"]
    detail: str
    env: str | None = None
    duration_s: float = 0.0


class KeyDoc(_Doc):
    """One PostHog project's key in this run, as short sha256 fingerprints (never the key)."""

    project_id: int
    environments: list[str] = Field(description="the environments that use this project's key")
    old: str | None = Field(description="fingerprint before the run (None: unknown)")
    new: str | None = Field(description="fingerprint after the run (None: unknown)")


class ResumeDoc(_Doc):
    """How to finish a failed run: run one of the argv lists as it is (no shell needed)."""

    argv: list[str] = Field(description="the rotator command line that completes the rotation")
    job_argv: list[str] = Field(
        description="the same as a one-off Job of the CronJob (kubectl, in the cluster)"
    )
    note: str


class EventsDoc(_Doc):
    marker_seen_after_s: float | None = None
    gateway_events: dict[str, int] = Field(default_factory=dict)
    sent: int | None = None
    ingested: int | None = None
    dropped: int | None = None


class RunReportDoc(_Doc):
    """The report of one run of rotator (run, verify, demo, each scheduled run)."""

    model_config = ConfigDict(title="rotator run report")

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["rotator.run-report"] = "rotator.run-report"
    run_id: str
    trigger: str
    mode: str
    outcome: Literal[
        "succeeded",
        "inconclusive",
        "aborted-nothing-changed",
        "failed-after-reset",
        "failed",
        "locked",
        "dry-run",
    ]
    exit_code: int
    started_at: AwareDatetime
    finished_at: AwareDatetime
    duration_s: float
    envs: list[str]
    steps: list[StepDoc]
    fingerprints: list[KeyDoc]
    commit: str | None = None
    reset_at: AwareDatetime | None = None
    dark_window_s: float | None = None
    ingestion_window_s: float | None = None
    error: str | None = None
    broken_now: str | None = None
    resume_command: str | None = Field(None, description="the resume, as prose for people")
    resume: ResumeDoc | None = None
    events: EventsDoc = EventsDoc()
    slack: str | None = None
    plan: list[str] = Field(default_factory=list)
    anomalies: list[str] = Field(default_factory=list)
    rotated: bool = Field(
        False, description="a new key ended this run rolled out and verified (metrics)"
    )
    key_since: dict[str, AwareDatetime] = Field(
        default_factory=dict,
        description="PostHog project id -> when its current key was set (the reset or the commit)",
    )


class LockDoc(_Doc):
    """The run lock (a Lease): who holds it, if anyone."""

    namespace: str
    name: str
    held: bool = Field(description="a live holder has it: a rotation is running")
    holder: str | None = Field(description="the run id of the holder (the Lease's holderIdentity)")
    renewed_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    error: str | None = Field(None, description="why the Lease could not be read")


class EnvStatusDoc(_Doc):
    env: str
    project: str
    in_sync: bool = Field(description="PostHog, git, the SealedSecret and the pods run one key")
    posthog: str
    git: str
    sealed_secret: str
    argocd: str
    rollout: str
    last_rotation: str


class StatusDoc(_Doc):
    """``rotator status -o json``: where each environment stands."""

    model_config = ConfigDict(title="rotator status")

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["rotator.status"] = "rotator.status"
    in_sync: bool = Field(description="every listed environment is in sync")
    lock: LockDoc | None
    environments: list[EnvStatusDoc]


DOCS: dict[str, type[_Doc]] = {"report": RunReportDoc, "status": StatusDoc}


def json_schema(name: str) -> dict[str, Any]:
    """PURE: the published JSON Schema of one document (``schema/<name>.schema.json``)."""
    schema = DOCS[name].model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(name=name),
        **schema,
    }


def json_schema_text(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"
