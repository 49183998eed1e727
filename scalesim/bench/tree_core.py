"""`scalesim bench tree-core`: what SGLang's Python radix-tree core costs against its Rust core.

Our eviction policy needs the Python core (the Rust one knows only SGLang's built-in policies).
This runs one workload three times, each on a fresh server (tiny model, a KV pool that holds a
third of the agents' prefixes): Rust core + LRU (stock SGLang's default), Python core + LRU,
Python core + the scalesim policy. With `SCALESIM_TREE_TIMING=1` the plugin times every call the
scheduler makes into the radix cache (match, checkpoint, evict, lock, unlock), so the table
shows the tree's own time per request next to the wall time and the cached share of prompt
tokens. Requests go one at a time, so the scheduler's time is the request path's time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from scalesim import paths
from scalesim.server_process import ServerProcess

TREE_CORE_ENV = "SGLANG_UNIFIED_RADIX_TREE_CORE_BACKEND"
CONFIGS: tuple[tuple[str, str, list[str]], ...] = (
    ("rust core, lru", "rust", ["--radix-eviction-policy", "lru"]),
    ("python core, lru", "python", ["--radix-eviction-policy", "lru"]),
    ("python core, scalesim", "python", ["--radix-eviction-policy", "scalesim"]),
)
VOCAB = 1000  # the tiny model has 1,024 tokens


@dataclass
class Workload:
    agents: int
    steps: int
    active: float
    prefix: int
    seed: int

    def schedule(self) -> list[list[int]]:
        """Active agents per step (the same for every configuration)."""
        rng = random.Random(self.seed)
        per_step = max(1, round(self.agents * self.active))
        return [sorted(rng.sample(range(self.agents), per_step)) for _ in range(self.steps)]

    def prompt(self, agent: int, step: int) -> list[int]:
        rng = random.Random(f"{self.seed}/{agent}")
        return [rng.randrange(100, VOCAB) for _ in range(self.prefix)] + [7 + step % 50, 8]


def _distances(schedule: list[list[int]], step: int, agents: int) -> dict[str, float]:
    """Steps until each agent's next activity (the perfect hint), from `step` on."""
    out: dict[str, float] = {}
    for ahead, active in enumerate(schedule[step:]):
        for a in active:
            out.setdefault(f"agent-{a}", float(ahead))
    return out


def run_one(label: str, core: str, args: list[str], work: Workload, port: int, log_dir: Path) -> dict:
    pool = work.prefix * work.agents // 3
    serve = ["--model-path", str(paths.tiny_model_path()), "--max-total-tokens", str(pool),
             "--enable-cache-report", *args]
    env = {TREE_CORE_ENV: core, "SCALESIM_TREE_TIMING": "1"}
    schedule = work.schedule()
    with ServerProcess(serve, port, log_dir / f"{core}-{args[-1]}.log", env=env) as server:
        url = server.base_url
        cached = prompt_tokens = 0
        start = time.perf_counter()
        for step, active in enumerate(schedule):
            requests.post(url + "/scalesim/v1/distances", json={
                "epoch": step, "distances": _distances(schedule, step, work.agents), "replace": True}, timeout=30)
            for a in active:
                resp = requests.post(url + "/generate", json={
                    "input_ids": work.prompt(a, step), "agent_id": f"agent-{a}",
                    "sampling_params": {"max_new_tokens": 2, "temperature": 0}}, timeout=120)
                resp.raise_for_status()
                meta = resp.json()["meta_info"]
                cached += meta["cached_tokens"]
                prompt_tokens += meta["prompt_tokens"]
        wall = time.perf_counter() - start
        (sched,) = requests.get(url + "/scalesim/v1/stats", timeout=30).json()["schedulers"]
    n = sum(len(a) for a in schedule)
    timing = sched.get("tree_timing", {})
    tree_s = sum(t["seconds"] for t in timing.values())
    return {"config": label, "requests": n, "wall_s": wall, "tree_ms_per_request": 1000 * tree_s / n,
            "cached_share": cached / max(prompt_tokens, 1), "ops": timing}


def main(agents: int, steps: int, active: float, prefix: int, seed: int, port: int, reverse: bool = False) -> int:
    work = Workload(agents, steps, active, prefix, seed)
    log_dir = paths.cache_root() / "bench-tree-core"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{agents} agents, {steps} steps, {active:.0%} active, {prefix}-token prefixes, KV pool "
          f"{prefix * agents // 3} tokens; requests one at a time; logs in {log_dir}", flush=True)
    rows = []
    # --reverse runs the same configurations last-first, to tell a drifting machine from a cost.
    for label, core, args in reversed(CONFIGS) if reverse else CONFIGS:
        rows.append(run_one(label, core, args, work, port, log_dir))
        r = rows[-1]
        print(f"  done: {label} ({r['wall_s']:.1f} s)", flush=True)
    rows.sort(key=lambda r: [c[0] for c in CONFIGS].index(r["config"]))
    print(f"\n{'configuration':24} {'wall s':>8} {'tree ms/req':>12} {'cached':>8}   per op: calls, mean us")
    for r in rows:
        ops = ", ".join(f"{op} {t['calls']} x {1e6 * t['seconds'] / max(t['calls'], 1):.0f}"
                        for op, t in sorted(r["ops"].items()))
        print(f"{r['config']:24} {r['wall_s']:8.1f} {r['tree_ms_per_request']:12.3f} {r['cached_share']:8.1%}   {ops}")
    base = rows[0]
    for r in rows[1:]:
        extra = r["tree_ms_per_request"] - base["tree_ms_per_request"]
        print(f"{r['config']} vs {base['config']}: tree time x{r['tree_ms_per_request'] / max(base['tree_ms_per_request'], 1e-9):.2f}"
              f" ({extra:+.3f} ms per request), wall time x{r['wall_s'] / base['wall_s']:.2f}")
    return 0
