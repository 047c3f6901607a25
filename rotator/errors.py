"""The whole exception tree of rotator.

::

    RotatorError
    +-- ConfigError                  exit 2, raised before any side effect
    +-- PreflightError               exit 3, nothing changed
    |   +-- LockHeld                 exit 4, another run holds the Lease
    +-- ClientError(system, retryable)   always chained ``from`` the library's error
    |   +-- PostHogError
    |   |   +-- ResetForbidden       403 on reset: nothing changed, the message names the remedy
    |   |   +-- ResetOutcomeUnknown  the reset was sent but no answer came back: read the key back
    |   |   +-- LoginFailed          the service user's session login was refused: nothing changed
    |   |   +-- QueryThrottled       the query API answered 429 until the deadline: unknown
    |   +-- SealingError
    |   |   +-- CertError            the sealing certificate is missing, expired, not RSA, too small
    |   +-- GitError
    |   +-- KubeError
    |   |   +-- RateLimited(retry_after_s)   HTTP 429, waited out before a retry
    |   +-- ArgoCDError
    |   +-- SlackError
    |   +-- PushgatewayError
    +-- WaitTimeout(step, waited_s)
    +-- VerificationFailed
    +-- StepFailed(step, env, cause) a run's step failed: the report's line; ``cause`` is the error

The class decides what the user sees: ``str(error)`` is one line that names the step, the
environment and the fix. Messages never contain a secret, only fingerprints. A run's outcome is
not an exception: the run returns its report, whose outcome gives the exit code.

Every error class lives here (tests/test_errors.py checks it); a client module only raises
them, chained ``from`` its library's error.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from rotator.redact import scrub

if TYPE_CHECKING:
    from rotator.steps import Step


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    CONFIG = 2
    ABORTED = 3
    LOCKED = 4


class RotatorError(Exception):
    """Base class: every error rotator raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(RotatorError):
    """The configuration (file, env or flags) is invalid; nothing was done."""

    exit_code = ExitCode.CONFIG


class PreflightError(RotatorError):
    """A check before the reset failed; nothing changed."""

    exit_code = ExitCode.ABORTED


class LockHeld(PreflightError):
    """Another rotation holds the Lease."""

    exit_code = ExitCode.LOCKED

    def __init__(self, holder: str, since: str) -> None:
        super().__init__(f"another rotation is in progress (holder {holder}, since {since})")
        self.holder = holder
        self.since = since


class ClientError(RotatorError):
    """A call to an outside system failed.

    ``retryable`` says whether repeating the same (idempotent) call may succeed.
    ``status`` is the HTTP status when there was one.
    """

    system = "unknown"

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class PostHogError(ClientError):
    system = "posthog"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable, status=status)
        self.code = code


class ResetForbidden(PostHogError):
    """PostHog refused the reset (403); nothing changed."""


class ResetOutcomeUnknown(PostHogError):
    """The reset request was sent but its answer was lost; the key may or may not be new."""


class LoginFailed(PostHogError):
    """The service user could not log in (or may not reset); raised before any reset."""


class QueryThrottled(PostHogError):
    """PostHog's query API answered 429 until the caller's deadline: unknown, not negative."""


class SealingError(ClientError):
    system = "sealing"


class CertError(SealingError):
    """The sealing certificate cannot be used."""


class GitError(ClientError):
    system = "git"


class KubeError(ClientError):
    system = "kubernetes"


class RateLimited(KubeError):
    """HTTP 429 with the server's ``Retry-After`` (seconds), waited out before a retry."""

    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        super().__init__(message, retryable=True, status=429)
        self.retry_after_s = retry_after_s


class ArgoCDError(ClientError):
    system = "argocd"


class SlackError(ClientError):
    system = "slack"


class PushgatewayError(ClientError):
    system = "pushgateway"


class WaitTimeout(RotatorError):
    """A wait passed its deadline."""

    def __init__(self, step: str, waited_s: float, what: str) -> None:
        super().__init__(f"{step}: gave up after {waited_s:.0f}s waiting for {what}")
        self.step = step
        self.waited_s = waited_s
        self.what = what


class VerificationFailed(RotatorError):
    """The new key could not be shown to work."""


class StepFailed(RotatorError):
    """A step failed; carries the step and environment for the report."""

    def __init__(self, step: Step, env: str | None, cause: Exception) -> None:
        where = f" [{env}]" if env else ""
        super().__init__(f"{step.value}{where}: {scrub(str(cause))}")
        self.step = step
        self.env = env
        self.cause = cause
