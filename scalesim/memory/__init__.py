"""The `AgentMemory` protocol every memory kind implements, and an in-memory reference."""

from scalesim.memory.base import AgentMemory, MemoryStats, Tier
from scalesim.memory.reference import ReferenceMemory

__all__ = ["AgentMemory", "MemoryStats", "ReferenceMemory", "Tier"]
