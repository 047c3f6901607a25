"""Simulated controllers: ordinary Kubernetes API clients, each in its own daemon thread."""

from rotator.sandbox.controllers.argocd import ArgoCDController
from rotator.sandbox.controllers.deployments import RolloutController
from rotator.sandbox.controllers.gateway import GatewaySimulator
from rotator.sandbox.controllers.sealedsecrets import SealedSecretsController

__all__ = ["ArgoCDController", "GatewaySimulator", "RolloutController", "SealedSecretsController"]
