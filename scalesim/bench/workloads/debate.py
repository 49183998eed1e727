"""Turn-based debates: the agents sit in tables of `1 / active` speakers; at every table one
agent speaks per step, answering the previous speaker (whose words are in its prompt).

The speaking order repeats each round; now and then a speaker passes its next turn (a skip
the hint knows about once it is announced). Hint: turns until the agent speaks
(`TurnEstimator`).
"""

from __future__ import annotations

from scalesim.bench.workloads.base import Call, Simulation
from scalesim.distance.estimators import TurnEstimator

TOPICS = ["whether the town should build a new harbour", "how to share the water during the drought",
          "who should be the next mayor", "whether the school needs a second teacher",
          "how to price bread fairly", "whether to hold the festival this year"]
PASS_CHANCE = 0.1


class Debate(Simulation):
    name = "debate"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        size = max(2, round(1 / self.params.active))
        order = list(self.agent_ids)
        self.rng.shuffle(order)
        self.tables = [order[i:i + size] for i in range(0, len(order), size)]
        self.turns = [TurnEstimator(t) for t in self.tables]
        self.topics = [self.rng.choice(TOPICS) for _ in self.tables]
        self.last_words = ["(opening)" for _ in self.tables]

    def distances(self, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for turns in self.turns:
            out.update(turns.distances())
        return out

    def calls(self, step: int) -> list[Call]:
        calls = []
        for i, turns in enumerate(self.turns):
            speaker = turns.speaker
            calls.append(Call(speaker, f"Debate on {self.topics[i]}, round {step // len(turns.order) + 1}. "
                                       f"The previous speaker said: \"{self.last_words[i]}\". Your reply:"))
        return calls

    def observe(self, step: int, agent: str, text: str) -> None:
        super().observe(step, agent, text)
        i = next(i for i, t in enumerate(self.turns) if t.speaker == agent)
        self.last_words[i] = self.last_said[agent] or "(silence)"
        self.turns[i].advance()
        if self.rng.random() < PASS_CHANCE:  # someone at the table will pass their next turn
            self.turns[i].skip(self.rng.choice(self.tables[i]))
