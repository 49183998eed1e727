"""Plan-based town (independent agents): each agent works through a daily schedule of actions.

An agent calls the LLM when its current action ends, to choose the next one; the action then
lasts 1 to `2 / active - 1` steps (mean `1 / active`, so about `active` of the agents call per
step). Hint: the remaining time of the current action (`PlanEstimator`).
"""

from __future__ import annotations

from scalesim.bench.workloads.base import Call, Simulation
from scalesim.bench.workloads.text import PLACES
from scalesim.distance.estimators import PlanEstimator

ACTIONS = ["cook breakfast", "open the shop", "walk to work", "tend the garden", "visit a friend",
           "write in the diary", "go fishing", "read at the library", "rest at home", "buy groceries"]


class PlanTown(Simulation):
    name = "plan_town"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.longest = max(1, round(2 / self.params.active) - 1)
        self.plans = PlanEstimator()
        self.doing: dict[str, str] = {}
        for a in self.agent_ids:  # staggered starts: the town is already under way
            self.plans.set_action(a, self.rng.randint(0, self.longest - 1))
            self.doing[a] = self.rng.choice(ACTIONS)

    def distances(self, step: int) -> dict[str, float]:
        self.plans.advance(step)
        return self.plans.distances()

    def calls(self, step: int) -> list[Call]:
        hour = 6 + step % 16
        return [Call(a, f"It is {hour:02d}:00. You just finished: {self.doing[a]}. Your last thought: "
                        f"{self.last_said.get(a, 'none yet')}. What do you do next, and where?")
                for a in self.agent_ids if self.plans.action_remaining(a) == 0]

    def observe(self, step: int, agent: str, text: str) -> None:
        super().observe(step, agent, text)
        self.doing[agent] = f"{self.rng.choice(ACTIONS)} at {self.rng.choice(PLACES)}"
        self.plans.set_action(agent, self.rng.randint(1, self.longest), start=step)
