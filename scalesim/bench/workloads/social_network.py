"""A social network: news items spread along a friendship graph, hop by hop.

Each agent has about 6 friends (a seeded random graph). An agent reached by a news item this
step calls the LLM (what it posts about it); each friend it has not reached yet then gets it
next step with probability `SHARE` (about one new agent per
agent reached, so an item neither dies out at once nor floods the network). When fewer than `active` of the agents would be reached
next step, new items start at random agents. Hint: per item, each agent's expected step of
hearing it (`ActivationPathEstimator` with `spread_once`: an agent shares an item only in the
step after it heard it; and with `share`, the chance it passes it to each friend: hop counts
alone put most of the network one step away), the nearest over all live items: an estimate,
since sharing is random.
"""

from __future__ import annotations

from scalesim.bench.workloads.base import Call, Simulation
from scalesim.distance.estimators import ActivationPathEstimator, combine_min

FRIENDS = 6
SHARE = 0.2
NEWS = ["the harbour will close for repairs", "the mayor is resigning", "a storm is coming on Friday",
        "the bakery won a prize", "the school is hiring", "fish prices doubled", "a circus arrives next week"]


class Item:
    def __init__(self, topic: str, start: str, edges: dict[str, list[str]]) -> None:
        self.topic = topic
        self.front = {start}
        self.reached = {start}
        self.paths = ActivationPathEstimator(edges, directed=False, spread_once=True, share=SHARE)
        self.paths.activate(self.front)


class SocialNetwork(Simulation):
    name = "social_network"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edges: dict[str, list[str]] = {a: [] for a in self.agent_ids}
        for a in self.agent_ids:
            while len(self.edges[a]) < FRIENDS // 2:
                b = self.rng.choice(self.agent_ids)
                if b != a and b not in self.edges[a]:
                    self.edges[a].append(b)
        self.friends = {a: set(self.edges[a]) for a in self.agent_ids}
        for a, out in self.edges.items():
            for b in out:
                self.friends[b].add(a)
        self.items: list[Item] = []
        self._seed_items()

    def _seed_items(self) -> None:
        while sum(len(i.front) for i in self.items) < self.params.active_agents:
            self.items.append(Item(self.rng.choice(NEWS), self.rng.choice(self.agent_ids), self.edges))

    def distances(self, step: int) -> dict[str, float]:
        return combine_min(*(i.paths.distances() for i in self.items))

    def calls(self, step: int) -> list[Call]:
        heard: dict[str, list[str]] = {}
        for item in self.items:
            for a in sorted(item.front):
                heard.setdefault(a, []).append(item.topic)
        return [Call(a, f"Day {step + 1}. Your friends tell you that {' and that '.join(topics)}. "
                        f"Your last post: {self.last_said.get(a, 'none yet')}. What do you post?")
                for a, topics in sorted(heard.items())]

    def end_step(self, step: int) -> None:
        """Every post of the step is out: the news moves one hop."""
        for item in self.items:
            nxt = {f for a in sorted(item.front) for f in sorted(self.friends[a])
                   if f not in item.reached and self.rng.random() < SHARE}
            item.reached |= nxt
            item.front = nxt
            item.paths.activate(nxt)
        self.items = [i for i in self.items if i.front]
        self._seed_items()
