"""The JSON report and `status -o json` keep a published contract: schema/*.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rotator.contract import DOCS, SCHEMA_VERSION, json_schema_text
from rotator.report import KeyChange, Outcome, to_json
from tests.test_report import report

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


def published_schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()))


def validate_against_published_schema(name: str, document: object) -> None:
    schema = published_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_published_schema_is_current(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.read_text() == json_schema_text(name), (
        f"{path.name} is out of date: run `rotator schema {name} > schema/{name}.schema.json`"
    )


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_s_json_report_validates_against_the_published_schema(
    outcome: Outcome,
) -> None:
    doc = to_json(
        report(
            outcome,
            error="argocd [prod]: sync failed",
            resume_command="rotator run --env prod (...)",
            resume_argv=("rotator", "run", "--env", "prod"),
            resume_job_argv=("kubectl", "-n", "rotator", "create", "job", "x"),
            anomalies=("push rejected once; re-applied",),
        )
    )
    validate_against_published_schema("report", doc)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["kind"] == "rotator.run-report"
    assert doc["resume"]["argv"] == ["rotator", "run", "--env", "prod"]


def test_fingerprints_are_a_list_per_project_with_its_environments() -> None:
    keys = (
        KeyChange(1, ("preview",), "sha256:000000000000", "sha256:111111111111"),
        KeyChange(2, ("prod",), "sha256:222222222222", None),
    )
    doc = to_json(report(keys=keys))
    assert doc["fingerprints"] == [
        {
            "project_id": 1,
            "environments": ["preview"],
            "old": "sha256:000000000000",
            "new": "sha256:111111111111",
        },
        {"project_id": 2, "environments": ["prod"], "old": "sha256:222222222222", "new": None},
    ]


def test_times_in_the_report_carry_their_zone() -> None:
    doc = to_json(report())
    assert doc["started_at"].endswith("Z") or doc["started_at"].endswith("+00:00")


def test_a_report_without_a_failure_has_no_resume() -> None:
    doc = to_json(report())
    assert doc["resume"] is None
    validate_against_published_schema("report", doc)
