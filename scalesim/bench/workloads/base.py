"""What every simulation workload is: parameters, agents with private prefixes, steps of calls.

A workload is plain Python (no server): the runner asks it, step by step, for the distances to
push and the calls to make, sends the calls concurrently through the client, and hands each
response back with `observe`. Who calls when depends only on the seed, never on the text the
model returns, so every system under test serves the same sequence of agents; the responses
flow into later prompts (the debate's last utterance, a town agent's latest memory).
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable
from dataclasses import dataclass

from scalesim.bench.workloads.text import persona_prefix

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 1.3 tokens per English word), for tests and planning."""
    return max(1, round(len(text.split()) * 1.3))


@dataclass(frozen=True)
class WorkloadParams:
    """`agents`; `active`: the share of agents calling per step (on average); `resident`: the share
    of agents whose state the memory budget holds; `steps`; `seed`; the private prefix length
    range in tokens; `output_tokens`: the most each call generates."""

    agents: int = 200
    active: float = 0.2
    resident: float = 0.25
    steps: int = 30
    seed: int = 0
    prefix_tokens: tuple[int, int] = (1000, 2000)
    output_tokens: int = 32

    def __post_init__(self) -> None:
        if self.agents < 2:
            raise ValueError(f"agents must be >= 2, got {self.agents}")
        for name in ("active", "resident"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        low, high = self.prefix_tokens
        if not 1 <= low <= high:
            raise ValueError(f"prefix_tokens must be (low, high) with 1 <= low <= high, got {self.prefix_tokens}")
        if not 1 <= self.output_tokens <= 32:
            raise ValueError(f"output_tokens must be in 1..32, got {self.output_tokens}")

    @property
    def active_agents(self) -> int:
        return max(1, round(self.agents * self.active))

    @property
    def resident_agents(self) -> int:
        return max(1, round(self.agents * self.resident))


@dataclass(frozen=True)
class Call:
    """One LLM call of a step: the agent and the step-specific end of its prompt."""

    agent: str
    situation: str
    max_tokens: int | None = None  # None: the workload's `output_tokens`


class Simulation(abc.ABC):
    """A simulation with `params.agents` agents; subclasses say who calls when and why.

    Contract, per step k = 0, 1, ...: `distances(k)` (the hints for this step: 0 for the agents
    calling now), then `calls(k)`, then `observe(k, agent, text)` for each call in the order of
    `calls(k)`, then `end_step(k)`; then k + 1.
    """

    name: str = ""

    def __init__(self, params: WorkloadParams, count_tokens: TokenCounter = estimate_tokens) -> None:
        self.params = params
        self.rng = random.Random(f"{self.name}/{params.seed}")
        self.agent_ids = [f"{self.name}-{i:04d}" for i in range(params.agents)]
        text_rng = random.Random(f"prefix/{self.name}/{params.seed}")  # distinct text per workload too
        low, high = params.prefix_tokens
        self.prefixes = {a: persona_prefix(i, text_rng, text_rng.randint(low, high), count_tokens)
                         for i, a in enumerate(self.agent_ids)}
        self.last_said: dict[str, str] = {}

    @property
    def n_steps(self) -> int:
        return self.params.steps

    def messages(self, call: Call) -> list[dict[str, str]]:
        """The chat of one call: the agent's private prefix as the system message (the same
        tokens every call, so a server can cache them), the situation as the user's turn. A chat,
        not a raw prompt: the instruct model then answers in a sentence, where after a long raw
        prompt it mostly ends its turn at once (1-token outputs, not a simulation's)."""
        return [{"role": "system", "content": self.prefixes[call.agent]},
                {"role": "user", "content": f"{call.situation}\nAnswer in one short sentence."}]

    @abc.abstractmethod
    def distances(self, step: int) -> dict[str, float]:
        """Invocation distance hints in steps (this step's callers: 0); agents may be missing."""

    @abc.abstractmethod
    def calls(self, step: int) -> list[Call]:
        """The calls of this step, one per calling agent."""

    def observe(self, step: int, agent: str, text: str) -> None:
        """The model's answer to `agent`'s call at `step` (kept for later prompts)."""
        self.last_said[agent] = " ".join(text.split())[:200]

    def end_step(self, step: int) -> None:
        """All of the step's answers are in."""


# What a dry run answers every call with: who calls when never depends on the text.
_DRY_ANSWER = "(dry run)"


def callers_per_step(sim: Simulation) -> list[int]:
    """How many agents call in each step of `sim`, found by running its schedule with a
    placeholder answer (consumes `sim`: build a fresh one to run). The active share is an
    average: a step of the social network or the plan town can have half as many callers again,
    and a budget sized for the average would make that step's requests wait for room."""
    counts = []
    for k in range(sim.n_steps):
        sim.distances(k)
        calls = sim.calls(k)
        for call in calls:
            sim.observe(k, call.agent, _DRY_ANSWER)
        sim.end_step(k)
        counts.append(len(calls))
    return counts
