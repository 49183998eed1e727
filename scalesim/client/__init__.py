"""ScaleSim's client: agent-tagged completions (the `openai` SDK), agents, per-step distances."""

from scalesim.client.base import AgentSpec, ClientConfig, Completion, ScaleSimError
from scalesim.client.client import AsyncScaleSimClient, ScaleSimClient

__all__ = ["AgentSpec", "AsyncScaleSimClient", "ClientConfig", "Completion", "ScaleSimClient", "ScaleSimError"]
