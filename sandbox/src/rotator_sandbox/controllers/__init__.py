"""Simulated controllers: ordinary Kubernetes API clients, each in its own daemon thread."""

from rotator_sandbox.controllers.argocd import ArgoCDController
from rotator_sandbox.controllers.deployments import RolloutController
from rotator_sandbox.controllers.gateway import GatewaySimulator
from rotator_sandbox.controllers.sealedsecrets import SealedSecretsController

__all__ = ["ArgoCDController", "GatewaySimulator", "RolloutController", "SealedSecretsController"]
