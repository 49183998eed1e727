"""A spatial town: agents walk between places at their own speed and talk when they meet.

An agent calls the LLM when it arrives somewhere (what to do there), and again when it leaves
(where to go next). An agent arriving where others are staying starts a conversation: the
first of them greets it (a call too). Hint: the earlier of the agent's own next call (arrival, or end of its
stay) and the first arrival of a walker it will greet: one heading to where it stays, arriving
before it leaves, with no agent ahead of it in the greeting order still staying there (a walk
takes `Walker.arrival` steps, rounded up). Walkers that arrive in between and might greet instead
are not foreseen: their stay is drawn on arrival.
"""

from __future__ import annotations

import math

from scalesim.bench.workloads.base import Call, Simulation
from scalesim.bench.workloads.text import PLACES
from scalesim.distance.estimators import PlanEstimator, Walker

GRID = 12.0
SPEEDS = (1.0, 2.0, 3.0)


class SpatialTown(Simulation):
    name = "spatial_town"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        n_places = max(2, self.params.agents // 8)
        self.places = [(self.rng.uniform(0, GRID), self.rng.uniform(0, GRID)) for _ in range(n_places)]
        self.longest_stay = max(2, round(3 / self.params.active))
        self.walkers: dict[str, Walker] = {}
        self.plans = PlanEstimator()  # next own call: arrival while walking, departure while staying
        self.why: dict[str, str] = {}
        for a in self.agent_ids:
            here = self.rng.randrange(n_places)
            self.walkers[a] = Walker(self.places[here], None, self.rng.choice(SPEEDS))
            self.plans.set_action(a, self.rng.randint(0, self.longest_stay))
            self.why[a] = "leave"

    def _name(self, point: tuple[float, float]) -> str:
        return PLACES[self.places.index(point) % len(PLACES)]

    def distances(self, step: int) -> dict[str, float]:
        self.plans.advance(step)
        own = {a: math.ceil(d) for a, d in self.plans.distances().items()}
        out = {a: float(d) for a, d in own.items()}
        arrivals: dict[tuple[float, float], set[int]] = {}
        for a, w in self.walkers.items():
            if w.destination is not None:  # own[a]: what is left of its walk
                arrivals.setdefault(w.destination, set()).add(own[a])
        staying = self._staying()
        for place, times in arrivals.items():
            for t in sorted(times):
                # Only one agent greets an arrival (`calls`): the first staying there that is not
                # leaving by then. Hinting every agent at the place kept the others' prefixes
                # in memory for a call they would not make.
                greeter = next((a for a in staying.get(place, ()) if own[a] > t), None)
                if greeter is not None:
                    out[greeter] = min(out[greeter], float(t))
        return out

    def _staying(self) -> dict[tuple[float, float], list[str]]:
        """The agents staying at each place, in greeting order (the first greets an arrival)."""
        out: dict[tuple[float, float], list[str]] = {}
        for a in self.agent_ids:
            w = self.walkers[a]
            if w.destination is None:
                out.setdefault(w.position, []).append(a)
        return out

    def calls(self, step: int) -> list[Call]:
        due = [a for a in self.agent_ids if self.plans.action_remaining(a) == 0]
        for a in due:  # walkers due now have arrived
            w = self.walkers[a]
            if w.destination is not None:
                self.walkers[a] = Walker(w.destination, None, w.speed)
                self.why[a] = "arrive"
        arrived = {self.walkers[a].position for a in due if self.why[a] == "arrive"}
        talk = []  # at each place someone arrived, the first agent staying there greets them
        staying = self._staying()
        for place in sorted(arrived):
            talk += [a for a in staying.get(place, ()) if a not in due][:1]
        for a in talk:
            self.why[a] = "talk"
        calls = []
        for a in sorted(due + talk, key=self.agent_ids.index):
            place = self._name(self.walkers[a].position)
            text = {"arrive": f"You arrive at {place}. What do you do here?",
                    "leave": f"You are done at {place}. Where do you go next?",
                    "talk": f"Someone you know arrives at {place} and greets you. What do you say?"}[self.why[a]]
            calls.append(Call(a, f"Step {step}. {text} Your last words: {self.last_said.get(a, 'none yet')}."))
        return calls

    def observe(self, step: int, agent: str, text: str) -> None:
        super().observe(step, agent, text)
        w = self.walkers[agent]
        if self.why[agent] == "leave":
            target = self.rng.choice([p for p in self.places if p != w.position])
            walker = Walker(w.position, target, w.speed)
            self.walkers[agent] = walker
            self.plans.set_action(agent, max(1, math.ceil(walker.arrival())), start=step)
        elif self.why[agent] == "arrive":
            self.plans.set_action(agent, self.rng.randint(1, self.longest_stay), start=step)
            self.why[agent] = "leave"
        else:  # talked; the stay goes on
            self.why[agent] = "leave"
