"""`scalesim bench core`: the distance core's cost per operation, printed as a table.

Target (issue "Invocation-distance core"): one full distance update of 10,000 agents plus
1,000 victim choices among them in under 10 ms on a development machine.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from scalesim.distance import DistanceTable
from scalesim.policy import DistancePriority, EvictionPolicy

TARGET_MS = 10.0


def _setup(n_agents: int, rng: random.Random) -> tuple[DistanceTable, EvictionPolicy, list[str]]:
    table = DistanceTable(clock=lambda: 0.0)
    policy = EvictionPolicy(DistancePriority(), table)
    agents = [f"agent-{i:05d}" for i in range(n_agents)]
    for i, agent in enumerate(agents):
        policy.add(("kv", agent), (agent,), 1 + rng.randrange(2000), float(i))
    table.update({a: float(rng.randrange(1000)) for a in agents}, epoch=0)
    return table, policy, agents


def _time_ms(fn: Callable[[], object], repeats: int, after: Callable[[object], None] | None = None) -> tuple[float, float]:
    """Median and best of `repeats` timed calls; `after(result)` runs untimed (undo)."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
        if after is not None:
            after(result)
    return statistics.median(samples), min(samples)


def run(n_agents: int = 10_000, victims: int = 1_000, repeats: int = 7, seed: int = 0) -> dict[str, float]:
    """Measure and print; return the medians in ms."""
    rng = random.Random(seed)
    table, policy, agents = _setup(n_agents, rng)
    epoch = [0]
    updates = [{a: float(rng.randrange(1000)) for a in agents} for _ in range(repeats)]
    partials = [{a: float(rng.randrange(1000)) for a in rng.sample(agents, 100)} for _ in range(repeats)]

    def full_update() -> None:
        # The policy re-keys inside the update (table listener): nothing is deferred.
        epoch[0] += 1
        table.update(updates[epoch[0] % repeats], epoch[0])

    def partial_update() -> None:
        epoch[0] += 1
        table.update(partials[epoch[0] % repeats], epoch[0])

    # What restoring evicted state needs, read once, outside the timed region.
    info = {("kv", a): ((a,), policy.size_of(("kv", a))) for a in agents}

    def choose_victims() -> list:
        # 1,000 choices, each evicting its victim (untimed: everything comes back after).
        gone = []
        for _ in range(victims):
            (victim,) = policy.victims(1)
            policy.remove(victim)
            gone.append(victim)
        return gone

    def restore(gone: list) -> None:
        for key in gone:
            owners, size = info[key]
            policy.add(key, owners, size, 0.0)

    def choose_only() -> None:
        for _ in range(victims):
            policy.victims(1)

    results = {}
    rows = [
        (f"full update, {n_agents} agents", full_update),
        ("partial update, 100 agents", partial_update),
        (f"{victims} victim choices + evictions", choose_victims),
        (f"{victims} victim choices (no eviction)", choose_only),
    ]
    print(f"{'operation':<40} {'median ms':>10} {'best ms':>9} {'per item µs':>12}")
    for label, fn in rows:
        median, best = _time_ms(fn, repeats, restore if fn is choose_victims else None)
        results[label] = median
        per = n_agents if label.startswith("full") else 100 if label.startswith("partial") else victims
        print(f"{label:<40} {median:>10.2f} {best:>9.2f} {1000 * median / per:>12.2f}")
    combined = results[f"full update, {n_agents} agents"] + results[f"{victims} victim choices + evictions"]
    verdict = "meets" if combined < TARGET_MS else "misses"
    print(f"full update + {victims} victim choices: {combined:.2f} ms ({verdict} the {TARGET_MS:.0f} ms target)")
    results["combined"] = combined
    return results
