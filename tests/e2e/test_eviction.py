"""Agent-aware eviction on a live server under memory pressure (tiny model, 1,024-token KV pool).

Each agent has a private 300-token prefix; the pool holds three of them. Scenarios start from an
empty cache and an empty distance table, and read the outcome from the cached-token counts SGLang
reports per request and from ScaleSim's stats. Both radix caches run the same scenarios: the
default UnifiedRadixCache and the plain RadixCache (`--radix-cache-backend radix`).
"""

from __future__ import annotations

import random

import pytest
import requests

from scalesim import paths
from tests.conftest import free_port

pytestmark = pytest.mark.server

PREFIX = 300
TAIL = 5
VOCAB = 1000  # the tiny model has 1,024 tokens; ids out of range crash SGLang's scheduler


@pytest.fixture(scope="module", params=["unified", "radix"])
def pressure_server(request, tmp_path_factory):
    from scalesim.server_process import ServerProcess

    model = paths.tiny_model_path()
    if not (model / ".scalesim-complete").exists():
        pytest.fail(f"tiny model missing at {model}: run `make setup`")
    args = ["--model-path", str(model), "--max-total-tokens", "1024", "--dtype", "float32",
            "--enable-cache-report", "--enable-metrics"]
    if request.param == "radix":
        args += ["--radix-cache-backend", "radix"]
    log = tmp_path_factory.mktemp(f"pressure-{request.param}") / "server.log"
    with ServerProcess(args, free_port(), log) as proc:
        proc.cache_kind = request.param
        yield proc


class Session:
    """One scenario: an empty cache and distance table, then requests by agent."""

    _epoch = 0

    def __init__(self, server, name: str, prompts: str | None = None):
        self.server, self.name, self.prompts = server, name, prompts or name
        assert requests.post(server.base_url + "/flush_cache", timeout=30).status_code == 200
        Session._epoch += 1
        self.push({}, replace=True)
        self.outputs: list[list[int]] = []

    def ids(self, agent: str, tail: int) -> list[int]:
        rng = random.Random(f"{self.prompts}/{agent}")
        return [rng.randrange(100, VOCAB) for _ in range(PREFIX)] + list(range(7, 7 + tail))

    def generate(self, agent: str | None, *, tail: int = TAIL, tagged: bool = True) -> int:
        """Send the agent's prompt (untagged if asked); return its cached prompt tokens."""
        body = {"input_ids": self.ids(agent, tail), "sampling_params": {"max_new_tokens": 3, "temperature": 0}}
        if tagged:
            body["agent_id"] = f"{self.name}/{agent}"
        resp = requests.post(self.server.base_url + "/generate", json=body, timeout=120)
        resp.raise_for_status()
        out = resp.json()
        self.outputs.append(out["output_ids"])
        return out["meta_info"]["cached_tokens"]

    def push(self, distances: dict[str, float], *, replace: bool = False) -> None:
        Session._epoch += 1
        body = {"epoch": Session._epoch, "distances": {f"{self.name}/{a}": d for a, d in distances.items()},
                "replace": replace}
        resp = requests.post(self.server.base_url + "/scalesim/v1/distances", json=body, timeout=30)
        assert resp.status_code == 200, resp.text

    def agent_stats(self, stats: dict, agent: str) -> dict:
        return stats["per_agent"].get(f"{self.name}/{agent}", {})


def scheduler_stats(server) -> dict:
    resp = requests.get(server.base_url + "/scalesim/v1/stats", timeout=30)
    resp.raise_for_status()
    (sched,) = resp.json()["schedulers"]
    return sched


def test_farthest_agent_is_evicted_first_and_nearest_survives(pressure_server):
    s = Session(pressure_server, f"dist-{pressure_server.cache_kind}")
    assert [s.generate(a) for a in "ABC"] == [0, 0, 0]
    s.push({"A": 1, "B": 5, "C": 10})
    assert s.generate("D") == 0  # needs room: one prefix must go
    # A and B kept their whole prefix (and the shared first tail tokens); C, the farthest, went.
    assert s.generate("A", tail=TAIL + 1) == PREFIX + TAIL
    assert s.generate("B", tail=TAIL + 1) == PREFIX + TAIL
    assert s.generate("C", tail=TAIL + 1) == 0
    stats = scheduler_stats(pressure_server)
    assert stats["hook_errors"] == 0
    assert s.agent_stats(stats, "C")["evicted_tokens"] >= PREFIX
    assert s.agent_stats(stats, "A")["evicted_tokens"] == 0
    assert s.agent_stats(stats, "B")["evicted_tokens"] == 0
    assert stats["evicted_tokens_by_reason"]["farthest"] >= PREFIX
    assert s.agent_stats(stats, "A")["hits"] == 1 and s.agent_stats(stats, "A")["cached_tokens"] == PREFIX + TAIL


def test_greedy_outputs_are_the_same_with_and_without_hints(pressure_server):
    kind = pressure_server.cache_kind
    hinted = Session(pressure_server, f"on-{kind}", prompts="same")
    cached = [hinted.generate(a) for a in "ABC"]
    hinted.push({"A": 1, "B": 5, "C": 10})
    cached += [hinted.generate(a, tail=TAIL + (a != "D")) for a in "DABC"]
    assert cached == [0, 0, 0, 0, PREFIX + TAIL, PREFIX + TAIL, 0]

    plain = Session(pressure_server, f"off-{kind}", prompts="same")  # same prompts, no distances
    cached = [plain.generate(a) for a in "ABC"]
    cached += [plain.generate(a, tail=TAIL + (a != "D")) for a in "DABC"]
    assert cached == [0] * 7  # LRU on a cyclic pattern: every prefix is gone when it comes back
    assert plain.outputs == hinted.outputs


def test_lru_order_for_fresh_agents_and_untagged_requests_mix(pressure_server):
    s = Session(pressure_server, f"lru-{pressure_server.cache_kind}")
    assert s.generate("A") == 0
    assert s.generate("U", tagged=False) == 0  # untagged: served, owned by nobody
    assert s.generate("B") == 0
    assert s.generate("C") == 0  # pool full: A, the least recently used, went
    assert s.generate("B", tail=TAIL + 1) == PREFIX + TAIL
    assert s.generate("A", tail=TAIL + 1) == 0
    stats = scheduler_stats(pressure_server)
    assert stats["hook_errors"] == 0
    assert stats["per_agent"]["_none"]["misses"] >= 1
    assert stats["evicted_tokens_by_reason"]["untagged"] + stats["evicted_tokens_by_reason"]["no_distance"] > 0


def test_many_requests_leave_no_pending_state_and_metrics_are_exported(pressure_server):
    s = Session(pressure_server, f"churn-{pressure_server.cache_kind}")
    for step in range(8):
        s.push({a: float((i + step) % 6) for i, a in enumerate("ABCDEF")})
        for a in "ABCDEF"[step % 3::2]:
            s.generate(a, tail=TAIL + step % 2)
    stats = scheduler_stats(pressure_server)
    assert stats["hook_errors"] == 0
    assert stats["pending_requests"] == 0
    assert requests.post(pressure_server.base_url + "/flush_cache", timeout=30).status_code == 200
    assert scheduler_stats(pressure_server)["tagged_nodes"] == 0

    metrics = requests.get(pressure_server.base_url + "/metrics", timeout=30).text
    agent = f"churn-{pressure_server.cache_kind}/A"
    assert f'scalesim_prefill_requests_total{{agent="{agent}",result="miss"}}' in metrics
    assert 'scalesim_evictions_total{reason="farthest"}' in metrics


def test_learned_distances_keep_the_agents_due_next_without_any_hint(pressure_server):
    """Four agents call in turn, ids only, no distances; three prefixes fit. LRU misses every
    time on this cycle (see the test above); the learned estimator predicts that the agent
    that just called is needed last, so its prefix goes and the others are found."""
    s = Session(pressure_server, f"learned-{pressure_server.cache_kind}")
    cached = [s.generate(a, tail=TAIL + r) for r in range(4) for a in "ABCD"]
    assert cached[:8] == [0] * 8  # cold, then one request per agent: nothing learned yet
    assert sum(c > 0 for c in cached[8:]) >= 4, cached


def test_a_first_chat_calls_situation_goes_before_any_agents_prefix(pressure_server):
    """On the chat route the prefix of a first call is known: the messages before the last
    (`chat_prefix`). A, B and C call once (a 150-token persona, a 150-token situation); D,
    nearest, then needs room. The three situations and answers go first, as tails; without the
    boundary C's whole first call went (farthest), and its next call found nothing."""
    from transformers import AutoTokenizer

    from scalesim.engine.sglang.chat_prefix import renderer

    render = renderer(AutoTokenizer.from_pretrained(str(paths.tiny_model_path())))
    s = Session(pressure_server, f"chat-{pressure_server.cache_kind}")
    words = ("alpha", "baker", "river", "stone", "market", "lamp", "garden", "tower")

    def text(seed: str, n: int) -> str:
        rng = random.Random(seed)
        return " ".join(rng.choice(words) for _ in range(n))

    def messages(agent: str, turn: int) -> list[dict]:
        return [{"role": "system", "content": f"{agent}: " + text(f"{s.name}/{agent}", 38)},
                {"role": "user", "content": text(f"{s.name}/{agent}/{turn}", 38)}]

    def chat(agent: str, turn: int) -> int:
        body = {"model": "tiny", "messages": messages(agent, turn), "max_tokens": 3, "temperature": 0,
                "agent_id": f"{s.name}/{agent}"}
        resp = requests.post(s.server.base_url + "/v1/chat/completions", json=body, timeout=120)
        resp.raise_for_status()
        return resp.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    def persona_tokens(agent: str) -> int:
        return len(render(messages(agent, 0)[:1]))

    s.push({"A": 1.0, "B": 2.0, "C": 3.0, "D": 0.0})
    before = scheduler_stats(pressure_server)["evicted_tokens_by_reason"]
    assert all(cached < 10 for cached in [chat(a, 0) for a in "ABCD"])  # the template's header only
    after = scheduler_stats(pressure_server)["evicted_tokens_by_reason"]
    assert after["tail"] > before["tail"] and after["farthest"] == before["farthest"]
    for a in "CBA":  # each agent's persona is still there for its next call
        assert chat(a, 1) >= persona_tokens(a)
    stats = requests.get(s.server.base_url + "/scalesim/v1/stats", timeout=30).json()
    assert stats["http"]["chat_prefixes_rendered"] >= 4 and stats["http"]["chat_prefixes_failed"] == 0
    assert scheduler_stats(pressure_server)["hook_errors"] == 0
