"""Key shapes, the capture path and the read-only personal key's scopes (FACTS section 2).

- A reset's answer is checked with ``re.fullmatch``: ``phc_`` + base62 and nothing around it
  (``$`` would let a trailing newline through into the sealed Secret).
- Keys minted before the ``phc_`` prefix existed are accepted when reading and adopting.
- The marker goes to ``/e/``, which Cloud's Rust capture and older self-hosted Django capture
  both serve (the latter has no ``/i/v0/e/``).
- The personal key needs ``project:read`` and ``query:read``; preflight names a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rotator.clients.posthog import parse_project
from rotator.errors import PostHogError
from rotator.names import ProjectId
from rotator.report import Outcome, to_text
from rotator_sandbox.posthog import generate_token
from rotator_sandbox.world import PERSONAL_KEY_ENV
from tests.posthog_fixtures import PostHogWorld, start_world
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    make_world,
    reliability_key_pair,
)

PID = ProjectId(7)
GOOD = "phc_" + "A1b2" * 10
PRE_PREFIX = "x8Kq2" * 8 + "abc"  # 43 base62 characters: generate_random_token, no prefix


def answer(token: str) -> dict[str, Any]:
    return {"id": 7, "name": "p", "api_token": token}


@pytest.mark.parametrize(
    "token", [GOOD + "\n", GOOD + " ", " " + GOOD, GOOD + "\r\n", "phc_"], ids=repr
)
def test_a_reset_answer_with_anything_around_the_key_is_refused(token: str) -> None:
    with pytest.raises(PostHogError, match="not a project key"):
        parse_project(PID, answer(token), what="reset", minted=True)
    with pytest.raises(PostHogError, match="not a project key"):
        parse_project(PID, answer(token), what="read")


def test_a_key_minted_before_the_phc_prefix_is_read_and_adopted_but_never_taken_from_a_reset() -> (
    None
):
    assert parse_project(PID, answer(PRE_PREFIX), what="read").api_token.reveal() == PRE_PREFIX
    with pytest.raises(PostHogError, match="not a project key"):
        parse_project(PID, answer(PRE_PREFIX), what="reset", minted=True)
    assert parse_project(PID, answer(GOOD), what="reset", minted=True).api_token.reveal() == GOOD


@pytest.fixture(name="legacy_world")
def legacy_world_fixture() -> Iterator[PostHogWorld]:
    world = start_world(lag_s=0.05, window_s=0.4, flavour="self_hosted_legacy")
    try:
        yield world
    finally:
        world.standin.stop()


def test_the_marker_reaches_an_older_self_hosted_posthog_without_i_v0_e(
    legacy_world: PostHogWorld,
) -> None:
    client = legacy_world.client()
    check_id = str(uuid.uuid4())
    client.send_marker(legacy_world.initial_key, check_id=check_id)
    hit = client.find_marker(legacy_world.project, check_id=check_id, deadline_s=5, poll_s=0.05)
    assert hit is not None
    assert legacy_world.standin.counters().for_key(legacy_world.initial_key).accepted == 1


@pytest.mark.parametrize("missing", ["query:read", "project:read"])
def test_preflight_names_the_scope_the_read_only_personal_key_lacks(
    make_world: Callable[..., World],  # noqa: F811
    missing: str,
) -> None:
    world = make_world()
    assert world.sb.posthog is not None
    has = tuple(s for s in ("project:read", "query:read") if s != missing)
    key = world.sb.posthog.add_personal_key(
        generate_token("phx_"), scoped=True, legacy=False, scopes=has
    )

    report = world.run(environ=world.environ(**{PERSONAL_KEY_ENV: key.reveal()}))

    assert report.outcome is Outcome.ABORTED, to_text(report)
    assert f"lacks the scope '{missing}'" in (report.error or ""), to_text(report)
    assert world.resets == 0
