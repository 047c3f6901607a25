"""PURE: a run's Prometheus metrics, carried over from the previous exposition.

A CronJob's pod lives for one run, so counters and "last time X happened" cannot live in the
process: each run reads the previous exposition (the textfile, or the Pushgateway's copy of the
job's group), adds its own run, and writes the whole set again. ``carry_over`` does that on
values; ``render`` turns them into the text exposition format through prometheus_client's
registry (its escaping, TYPE/HELP lines and counter ``_total`` naming), and ``parse`` reads one
back with prometheus_client's parser. No I/O here: the runners write the file
(``prometheus_client.write_to_textfile``) and push (``clients.pushgateway``).

Which time moves when (the overdue alert reads the rotation time, never the run time, so an
adopt check every 10 minutes or a verify-only run cannot hide rotations that keep aborting):

- ``rotator_last_run_timestamp_seconds``: every run.
- ``rotator_last_success_timestamp_seconds``: every succeeded run (rotate, adopt, verify).
- ``rotator_last_rotation_timestamp_seconds``: a run that left a new key rolled out and verified
  (it reset the key, or completed a reset an earlier run began).
- ``rotator_key_created_timestamp_seconds{project}``: when the project's current key was set
  (the reset, or the rotation commit in git); ``rotator_key_age_seconds{project}`` is its age
  when the run ended (frozen between runs: alert on ``time() - created``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from rotator.report import Outcome, RunReport

PREFIX = "rotator_"


@dataclass(frozen=True)
class Carried:
    """What one run hands to the next through the exposition."""

    runs: Mapping[str, float] = field(default_factory=dict)  # outcome -> count
    last_success: float | None = None
    last_rotation: float | None = None
    dark_window_s: float | None = None
    key_created: Mapping[str, float] = field(default_factory=dict)  # project id -> timestamp


def parse(text: str, *, job: str | None = None) -> Carried:
    """PURE: the carried values of a previous exposition (unknown or broken text: nothing).

    ``job``: keep only samples with that ``job`` label (the Pushgateway's ``/metrics`` shows
    every group, each sample labelled with its grouping key).
    """
    runs: dict[str, float] = {}
    gauges: dict[str, float] = {}
    created: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return Carried()
    for family in families:
        for sample in family.samples:
            labels = dict(sample.labels)
            if job is not None and labels.get("job") != job:
                continue
            if sample.name == "rotator_runs_total" and "outcome" in labels:
                runs[labels["outcome"]] = sample.value
            elif sample.name == "rotator_key_created_timestamp_seconds" and "project" in labels:
                created[labels["project"]] = sample.value
            elif sample.name.startswith(PREFIX):
                gauges[sample.name] = sample.value
    return Carried(
        runs=runs,
        last_success=gauges.get("rotator_last_success_timestamp_seconds"),
        last_rotation=gauges.get("rotator_last_rotation_timestamp_seconds"),
        dark_window_s=gauges.get("rotator_dark_window_seconds"),
        key_created=created,
    )


def carry_over(previous: Carried, report: RunReport) -> Carried:
    """PURE: the values after ``report``'s run."""
    finished = report.finished_at.timestamp()
    succeeded = report.outcome is Outcome.SUCCEEDED
    runs = dict(previous.runs)
    runs[report.outcome.value] = runs.get(report.outcome.value, 0.0) + 1
    created = dict(previous.key_created)
    created.update({p: t.timestamp() for p, t in report.key_since.items()})
    return Carried(
        runs=runs,
        last_success=finished if succeeded else previous.last_success,
        last_rotation=finished if succeeded and report.rotated else previous.last_rotation,
        dark_window_s=(
            report.dark_window_s if report.dark_window_s is not None else previous.dark_window_s
        ),
        key_created=created,
    )


class _RunCollector(Collector):
    """A prometheus_client collector of fixed values: one run, plus what it carries."""

    def __init__(self, report: RunReport, carried: Carried) -> None:
        self._report = report
        self._carried = carried

    def collect(self) -> Iterator[Metric]:
        report, carried = self._report, self._carried
        finished = report.finished_at.timestamp()
        yield _gauge("last_run_timestamp_seconds", "When the last run finished.", finished)
        outcome = GaugeMetricFamily(
            PREFIX + "last_run_outcome",
            "1 for the outcome of the last run, 0 for the others.",
            labels=["outcome"],
        )
        for o in Outcome:
            outcome.add_metric([o.value], int(o is report.outcome))
        yield outcome
        yield _gauge("last_run_exit_code", "Exit code of the last run.", int(report.exit_code))
        yield _gauge("last_run_duration_seconds", "Wall time of the last run.", report.duration_s)
        steps = GaugeMetricFamily(
            PREFIX + "step_duration_seconds",
            "Wall time of each step in the last run.",
            labels=["step"],
        )
        for step, secs in sorted(report.step_durations().items()):
            steps.add_metric([step], secs)
        yield steps
        runs = CounterMetricFamily(
            PREFIX + "runs", "Runs by outcome, over every run so far.", labels=["outcome"]
        )
        for o in Outcome:
            runs.add_metric([o.value], carried.runs.get(o.value, 0.0))
        yield runs
        yield from _optional(
            ("last_success_timestamp_seconds", carried.last_success,
             "When a run last succeeded (a rotation, an adopt check or a verify)."),
            ("last_rotation_timestamp_seconds", carried.last_rotation,
             "When a new key was last rolled out and verified (a reset and its completion)."),
            ("dark_window_seconds", carried.dark_window_s,
             "From the reset to the last pod Ready on the new key, in the last rotation."),
        )  # fmt: skip
        if carried.key_created:
            created = GaugeMetricFamily(
                PREFIX + "key_created_timestamp_seconds",
                "When the project's current PostHog key was set (reset or rotation commit).",
                labels=["project"],
            )
            age = GaugeMetricFamily(
                PREFIX + "key_age_seconds",
                "Age of the project's current PostHog key when the last run ended.",
                labels=["project"],
            )
            for project, ts in sorted(carried.key_created.items()):
                created.add_metric([project], ts)
                age.add_metric([project], max(0.0, finished - ts))
            yield created
            yield age


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _optional(*items: tuple[str, float | None, str]) -> Iterator[Metric]:
    for name, value, doc in items:
        if value is not None:
            yield _gauge(name, doc, value)


def render(report: RunReport, carried: Carried) -> str:
    """PURE: the text exposition of the run and what it carries."""
    return generate_latest(registry_for(report, carried)).decode()


def registry_for(report: RunReport, carried: Carried) -> CollectorRegistry:
    """The same metrics as a registry (for ``prometheus_client.write_to_textfile``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(report, carried))
    return registry
