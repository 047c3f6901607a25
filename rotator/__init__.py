"""rotator: rotate a PostHog project API key through sealed-secrets, git, ArgoCD and a rollout."""

__version__ = "0.1.0"
