"""PURE: rotator's shared vocabulary, each name defined here and nowhere else.

- ids: the ``NewType``s that say what a plain ``str``/``int`` is (an environment's name, a
  PostHog project id, a key's fingerprint);
- the names rotator writes into other systems and reads back from them: the pod-template
  annotation that records which key a Deployment runs with (and the sealed file's template
  annotation, the same name), the git trailers of a rotation commit, the Kubernetes Events'
  reporting controller, and the name rotator goes by where a system asks who acts (ArgoCD's
  sync user, an Event's source component, the Pushgateway job).

Changing a value here changes what rotator finds in systems it already wrote to: a renamed
trailer or annotation makes every earlier rotation invisible, so these are part of the
on-the-wire contract (tests/test_names.py pins them).
"""

from __future__ import annotations

from typing import Final, NewType

# --- ids --------------------------------------------------------------------------------------

EnvName = NewType("EnvName", str)
"""An environment's name: a key of ``environments:`` in the config (``preview``, ``prod``)."""

ProjectId = NewType("ProjectId", int)
"""A PostHog project (team) id: ``environments.<env>.posthog_project_id``."""

Fingerprint = NewType("Fingerprint", str)
"""``sha256:`` and 12 hex characters of a secret (``rotator.redact.fingerprint``)."""

# --- Kubernetes annotations and Events --------------------------------------------------------

FINGERPRINT_ANNOTATION: Final = "rotator.align.dev/key-fingerprint"
"""On the SealedSecret's template and on the Deployment's pod template: the key's fingerprint."""

REPORTING_CONTROLLER: Final = "rotator.align.dev/rotator"
"""events.k8s.io/v1 ``reportingController`` (and core/v1 ``reportingComponent``) of our Events."""

COMPONENT: Final = "rotator"
"""Who acts, where a system asks: ArgoCD's sync ``username``, an Event's ``source.component``,
the Pushgateway job."""

# --- git trailers of a rotation commit (never the key itself, only its fingerprint) -----------

TRAILER_RUN_ID: Final = "Rotator-Run-Id"
TRAILER_TRIGGER: Final = "Rotator-Trigger"
TRAILER_KEY_FINGERPRINT: Final = "Rotator-Key-Fingerprint"
