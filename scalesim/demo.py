"""`scalesim demo`: a short multi-agent town simulation against a live ScaleSim server.

Starts `scalesim serve` on the embedded default model, runs N agents for a few steps (a share
of them active per step, their requests sent concurrently through the OpenAI SDK, each tagged
with its agent id), prints what each agent does and what the server cached, then stops the
server. Each agent's prompt starts with its own persona, so a later call of the same agent
reuses its prefix from the radix cache: the "cached" column shows that.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from openai import AsyncOpenAI

from scalesim.server_process import ServerProcess

NAMES = ["Ada", "Bram", "Cleo", "Dario", "Esme", "Farid", "Greta", "Hugo", "Ines", "Jonas",
         "Kira", "Lev", "Mira", "Nico", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tess",
         "Uma", "Viktor", "Wren", "Xavi", "Yara", "Zeno"]
JOBS = ["baker", "blacksmith", "teacher", "farmer", "librarian", "doctor", "painter", "mayor",
        "fisher", "carpenter", "musician", "merchant", "nurse", "poet"]
PLACES = ["the bakery", "the market", "the school", "the cafe", "the park", "the town hall", "the harbour"]


@dataclass
class Agent:
    agent_id: str
    name: str
    job: str
    place: str
    memories: list[str] = field(default_factory=list)

    def persona(self) -> str:
        return (f"You are {self.name}, the town's {self.job}. You live in a small town by the sea, "
                f"you are kind and practical, and you answer in one short sentence.")


@dataclass
class StepRecord:
    step: int
    agent_id: str
    text: str
    prompt_tokens: int
    cached_tokens: int
    latency_s: float


def make_town(n_agents: int, seed: int) -> list[Agent]:
    rng = random.Random(seed)
    return [
        Agent(f"agent-{i:03d}", NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i)),
              rng.choice(JOBS), rng.choice(PLACES))
        for i in range(n_agents)
    ]


async def _act(client: AsyncOpenAI, model: str, agent: Agent, step: int, max_tokens: int) -> StepRecord:
    recent = " ".join(agent.memories[-2:]) or "Nothing yet."
    messages = [
        {"role": "system", "content": agent.persona()},
        {"role": "user", "content": f"Hour {8 + step}. You are at {agent.place}. Earlier: {recent} "
                                    "What do you do now?"},
    ]
    start = time.perf_counter()
    resp = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0,
        user=agent.agent_id, extra_body={"agent_id": agent.agent_id},
    )
    latency = time.perf_counter() - start
    text = (resp.choices[0].message.content or "").strip().replace("\n", " ")
    agent.memories.append(f"At hour {8 + step}: {text}")
    details = resp.usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return StepRecord(step, agent.agent_id, text, resp.usage.prompt_tokens, cached, latency)


async def simulate(base_url: str, n_agents: int, steps: int, active_share: float, seed: int,
                   max_tokens: int) -> list[StepRecord]:
    """Run the town; return one record per request, printing each step as it completes."""
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="scalesim", timeout=300, max_retries=1)
    model = (await client.models.list()).data[0].id
    agents = make_town(n_agents, seed)
    rng = random.Random(seed + 1)
    n_active = max(1, round(active_share * n_agents))
    records: list[StepRecord] = []
    # A small group that meets every step, plus a random share: repeated callers show prefix reuse.
    regulars = agents[:2]
    for step in range(steps):
        active = regulars + rng.sample(agents[2:], max(0, n_active - len(regulars)))
        t0 = time.perf_counter()
        done = await asyncio.gather(*(_act(client, model, a, step, max_tokens) for a in active))
        print(f"\n-- step {step + 1}/{steps}: {len(active)} of {n_agents} agents active "
              f"({time.perf_counter() - t0:.1f} s)")
        for rec in done:
            print(f"  {rec.agent_id}  prompt {rec.prompt_tokens:4d}  cached {rec.cached_tokens:4d}  {rec.text[:90]}")
        records += done
    await client.close()
    return records


def summarize(records: list[StepRecord], wall_s: float) -> str:
    prompt = sum(r.prompt_tokens for r in records)
    cached = sum(r.cached_tokens for r in records)
    agents = len({r.agent_id for r in records})
    return (f"{len(records)} requests from {agents} agents in {wall_s:.1f} s; "
            f"prompt tokens {prompt}, served from cache {cached} ({100 * cached / max(prompt, 1):.0f}%)")


def run_demo(n_agents: int, steps: int, active_share: float, seed: int, port: int, max_tokens: int,
             log_path: Path) -> int:
    print(f"Starting scalesim serve on port {port} (log: {log_path}) ...")
    t0 = time.perf_counter()
    with ServerProcess(["--enable-cache-report", "--max-total-tokens", "32768"], port, log_path) as server:
        print(f"Server ready in {time.perf_counter() - t0:.0f} s; simulating {n_agents} agents for {steps} steps.")
        t1 = time.perf_counter()
        records = asyncio.run(simulate(server.base_url, n_agents, steps, active_share, seed, max_tokens))
        print("\n" + summarize(records, time.perf_counter() - t1))
    print("Server stopped.")
    return 0
