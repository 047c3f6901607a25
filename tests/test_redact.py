from __future__ import annotations

import io
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.logs import log_context, setup_logging
from rotator.redact import Secret, fingerprint, scrub


def test_a_secret_never_prints_its_value() -> None:
    secret = Secret("phc_abcdefghijklmnop")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret}"):
        assert "phc_abcdefghijklmnop" not in text
        assert secret.fingerprint in text
    assert secret.reveal() == "phc_abcdefghijklmnop"


def test_a_secret_refuses_to_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("phc_neverpickled123"))


def test_fingerprint_is_short_stable_and_prefixed() -> None:
    assert fingerprint("phc_x") == fingerprint(b"phc_x")
    assert fingerprint("phc_x").startswith("sha256:")
    assert len(fingerprint("phc_x")) == len("sha256:") + 12


# Realistic secrets: the registry is process-wide, and a short or low-entropy value registered
# here would later match by chance in another test's output (a sealed file's base64, say).
@given(st.from_regex(r"[A-Za-z0-9_+/=-]{32,64}", fullmatch=True))
def test_scrub_removes_every_registered_value(value: str) -> None:
    Secret(value)
    assert value not in scrub(f"before {value} after {value}")


def test_the_logging_filter_scrubs_values_that_slip_into_a_log_line() -> None:
    stream = io.StringIO()
    setup_logging(fmt="text", stream=stream)
    secret = Secret("phc_leakedintolog0001")
    with log_context(step="seal", env="prod"):
        logging.getLogger("t").info("oops %s", secret.reveal())
    text = stream.getvalue()
    assert "phc_leakedintolog0001" not in text
    assert secret.fingerprint in text
    assert "[seal/prod]" in text


def test_json_logs_carry_step_and_env_and_scrub_exceptions() -> None:
    stream = io.StringIO()
    setup_logging(fmt="json", stream=stream)
    secret = Secret("phc_leakedintoexception")
    try:
        raise ValueError(f"bad {secret.reveal()}")
    except ValueError:
        with log_context(step="rotate"):
            logging.getLogger("t").exception("failed")
    text = stream.getvalue()
    assert "phc_leakedintoexception" not in text
    assert '"step": "rotate"' in text
