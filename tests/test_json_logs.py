"""JSON logs for the cluster: run id, step, env, a zoned ISO time; the report as one record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from rotator.logs import log_context, setup_logging
from rotator.output import log_report
from tests.test_contract import validate_against_published_schema
from tests.test_report import report


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = setup_logging(fmt="json", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def test_a_json_log_line_names_the_run_step_and_env_with_a_zoned_iso_time(
    json_log: io.StringIO,
) -> None:
    with log_context(run="rot-20261204-010203-abcdef", step="argocd", env="prod"):
        logging.getLogger("rotator.test").info("sync of %s started", "abc123")
    line = json.loads(json_log.getvalue().splitlines()[-1])
    assert line["run_id"] == "rot-20261204-010203-abcdef"
    assert (line["step"], line["env"]) == ("argocd", "prod")
    assert line["message"] == "sync of abc123 started"
    moment = datetime.fromisoformat(line["time"])
    assert moment.utcoffset() is not None
    assert line["time"].endswith("+00:00")


def test_the_report_is_one_json_record_carrying_the_whole_json_report(
    json_log: io.StringIO,
) -> None:
    log_report(report())
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "run report: succeeded (exit 0)"
    assert record["run_id"] == "rot-1"
    validate_against_published_schema("report", record["report"])
