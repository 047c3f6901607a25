"""PostHog's query limits: throttling is "throttled" (inconclusive), never "the key is dead".

posthog/rate_limit.py HogQLQueryThrottle (120/hour on legacy teams and self-hosted) and
posthog/clickhouse/client/limit.py (3 concurrent API queries, 429 without Retry-After).
"""

from __future__ import annotations

from collections.abc import Callable

from rotator.report import Outcome, to_text
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    make_world,
    reliability_key_pair,
)


def test_a_throttled_query_is_reported_throttled_not_key_not_live(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    posthog = world.sb.posthog
    assert posthog is not None
    # Right after the reset, three other queries of the organization hold every slot.
    posthog.on_reset = lambda _pid: posthog.occupy_query_slots(3)

    report = world.run("waits.marker_s=1", "waits.gateway_events_s=1")

    assert report.outcome is Outcome.INCONCLUSIVE, to_text(report)
    assert "throttled" in (report.error or ""), to_text(report)
    assert "may not be live" not in to_text(report)
    assert world.resets == 1

    posthog.on_reset = None
    posthog.free_query_slots()
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, to_text(again)
    assert world.resets == 1


def test_every_environments_gateway_events_are_counted_in_one_query(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    posthog = world.sb.posthog
    assert posthog is not None
    report = world.run()
    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    gateway_queries = [q for q in posthog.query_log() if "countIf(" in q]
    assert gateway_queries, "counted with countIf"
    assert all(q.count("countIf(") == 2 for q in gateway_queries), gateway_queries
