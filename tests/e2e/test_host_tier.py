"""SGLang's host KV tier (`--enable-hierarchical-cache`) on a CPU device, with ScaleSim's policy.

Tiny model in float32; a 1,024-token device pool (three 300-token prefixes) and the default host
pool of twice that, written back (`serve`'s default with the plugin: a prefix is copied to host
memory when the device evicts it). Prefixes evicted from the device come back from the host;
when the host is full too, the farthest agent's state is the one that goes.
"""

from __future__ import annotations

import pytest
import requests

from scalesim import paths
from tests.conftest import free_port
from tests.e2e.test_eviction import PREFIX, TAIL, Session, scheduler_stats

pytestmark = pytest.mark.server


def _serve(tmp_path_factory, name: str, *extra: str):
    from scalesim.server_process import ServerProcess

    args = ["--model-path", str(paths.tiny_model_path()), "--max-total-tokens", "1024", "--dtype", "float32",
            "--enable-cache-report", "--enable-hierarchical-cache", *extra]
    return ServerProcess(args, free_port(), tmp_path_factory.mktemp(name) / "server.log")


@pytest.fixture(scope="module")
def host_server(tmp_path_factory):
    with _serve(tmp_path_factory, "host") as proc:
        proc.cache_kind = "host"
        yield proc


@pytest.fixture(scope="module")
def host_server_no_prefetch(tmp_path_factory):
    with _serve(tmp_path_factory, "host-noprefetch", "--radix-eviction-policy-config", '{"prefetch": false}') as proc:
        proc.cache_kind = "host-noprefetch"
        yield proc


def test_evicted_prefixes_come_back_from_host_memory_with_the_same_outputs(host_server):
    s = Session(host_server, "roundtrip")
    assert [s.generate(a) for a in "ABCD"] == [0, 0, 0, 0]  # D pushes a prefix out of the device
    # Every prefix is whole again, from the device or from host memory.
    assert [s.generate(a, tail=TAIL + 1) for a in "ABCD"] == [PREFIX + TAIL] * 4
    cached_outputs = s.outputs[4:]
    fresh = Session(host_server, "roundtrip-fresh", prompts="roundtrip")  # flushed: computed anew
    for a in "ABCD":
        fresh.generate(a, tail=TAIL + 1)
    assert fresh.outputs == cached_outputs
    assert scheduler_stats(host_server)["hook_errors"] == 0


def test_host_memory_keeps_the_nearest_agents_copies(host_server):
    """A (nearest) ... L (farthest) arrive in turn. Written back, the tiers hold about nine
    300-token prefixes: the device keeps A, B and the latest; each newer one it demotes to host
    memory, which holds six (C ... H). Once host memory is full, the next victim (I, then J, then K)
    is farther than every copy there: it is dropped, not copied (SGLang alone would push out H,
    then G, ...: the nearest copies for the farthest agents). LRU would have dropped the oldest."""
    s = Session(host_server, "host-order")
    agents = "ABCDEFGHIJKL"
    s.push({a: float(i + 1) for i, a in enumerate(agents)})
    assert [s.generate(a) for a in agents] == [0] * 12
    kv = scheduler_stats(host_server)["host_kv"]
    # I, J, K: each one's prompt and, in host memory below it, its output's 2 cached tokens (the
    # third generated token has no KV), which SGLang drops with it.
    assert (kv["writeback_declined"], kv["writeback_declined_tokens"]) == (3, 3 * (PREFIX + TAIL + 2))
    found = [_details(host_server, a, s) for a in "ACHI"]
    assert [(f["device"], f["host"]) for f in found] == [(PREFIX + TAIL, 0), (0, PREFIX + TAIL), (0, PREFIX + TAIL),
                                                          (0, 0)]
    stats = scheduler_stats(host_server)
    assert stats["hook_errors"] == 0 and stats["pending_requests"] == 0
    assert stats["memory"]["host_write_policy"] == "write_back"  # `serve`'s default with the plugin
    assert requests.get(host_server.base_url + "/health", timeout=30).status_code == 200


def _details(server, agent: str, session: Session) -> dict:
    """Where the request's cached prompt tokens came from, and its output."""
    body = {"input_ids": session.ids(agent, TAIL + 1), "agent_id": f"{session.name}/{agent}",
            "sampling_params": {"max_new_tokens": 3, "temperature": 0}}
    out = requests.post(server.base_url + "/generate", json=body, timeout=120).json()
    meta = out["meta_info"]
    found = meta.get("cached_tokens_details") or {"device": meta["cached_tokens"], "host": 0}
    return {**found, "output": out["output_ids"]}


def test_near_agents_prefix_is_loaded_to_the_device_ahead_of_its_request(host_server, host_server_no_prefetch):
    """A's prefix is in host memory only; then A becomes the nearest agent. With prefetch its
    request finds the whole prefix on the device; without, SGLang loads it from host memory
    when the request is admitted."""
    import time

    found = {}
    for server in (host_server, host_server_no_prefetch):
        s = Session(server, f"ahead-{server.cache_kind}", prompts="ahead")
        assert [s.generate(a) for a in "ABCDE"] == [0] * 5  # A and B now live in host memory only
        issued = scheduler_stats(server)["host_kv"]["prefetch_issued"]
        s.push({"A": 0.0})
        # The simulation's own work between steps; the scheduler prefetches meanwhile. Wait for
        # the push to be handled (a scan happens with it), not for a fixed time.
        pushes = s._epoch
        for _ in range(100):
            stats = scheduler_stats(server)
            expect_prefetch = server is host_server
            if stats["distance_epoch"] == pushes and (stats["host_kv"]["prefetch_issued"] > issued
                                                      or not expect_prefetch):
                break
            time.sleep(0.1)
        found[server.cache_kind] = _details(server, "A", s)
    assert {k: found["host"][k] for k in ("device", "host")} == {"device": PREFIX + TAIL, "host": 0}
    assert found["host-noprefetch"]["device"] < PREFIX and found["host-noprefetch"]["host"] > 0
    assert found["host"]["output"] == found["host-noprefetch"]["output"]
    kv = scheduler_stats(host_server)["host_kv"]
    assert kv["prefetch_issued"] >= 1 and kv["prefetch_used"] >= 1 and kv["held"] == 0
    assert scheduler_stats(host_server_no_prefetch)["host_kv"]["prefetch_issued"] == 0


def test_a_request_racing_its_prefetch_reads_whole_kv(host_server, host_server_no_prefetch):
    """The request follows the push at once, so its batch may be formed while the prefetch's
    load is in flight (on GPU a side-stream copy): it must read the whole prefix or find it not
    loaded yet, never half-written KV. Outputs equal the run without prefetch every time."""
    outputs = {}
    for server in (host_server, host_server_no_prefetch):
        s = Session(server, f"race-{server.cache_kind}", prompts="race")
        got = []
        for round_ in range(4):
            for a in "ABCDE":  # A and B end up in host memory only
                s.generate(a, tail=TAIL + round_)
            s.push({"A": 0.0, "B": 1.0})
            got += [_details(server, a, s)["output"] for a in "AB"]  # no pause after the push
        outputs[server.cache_kind] = (s.outputs, got)
    assert outputs["host"] == outputs["host-noprefetch"]
    stats = scheduler_stats(host_server)
    assert stats["hook_errors"] == 0 and stats["pending_requests"] == 0
    print(f"\nrace: host_kv {stats['host_kv']}")


def test_a_batch_loaded_from_host_memory_swaps_with_its_victims(host_server):
    """Nine agents fill both tiers: the device holds the latest three (G, H, I), host memory the
    first six. A, B and C (host memory only, the nearest; beyond prefetch's lookahead) then come
    in one batch, G, H and I are next and D, E and F farthest: each load evicts a device prefix
    whose copy needs host room. Settled one after another (`load_swap`), each load's own host
    copy is the room for the next victim, so the tiers drop one prefix (D) to make room, not one
    per load (SGLang's order alone: D, E and F). Outputs equal a fresh run's."""
    s = Session(host_server, "swap")
    assert [s.generate(a) for a in "ABCDEFGHI"] == [0] * 9
    s.push({**dict.fromkeys("ABC", 2.0), **dict.fromkeys("GHI", 3.0), **dict.fromkeys("DEF", 4.0)})
    before = scheduler_stats(host_server)
    assert before["memory"]["host_free"] < PREFIX + TAIL  # host memory is full: the swap is needed
    outputs, cached = _batch(host_server, s, "ABC")
    after = scheduler_stats(host_server)
    assert cached == [PREFIX + TAIL - 1] * 3  # all but the last prompt token, from host memory
    assert after["host_kv"]["loads_settled"] - before["host_kv"]["loads_settled"] == 2  # before B's and C's
    held_before, held_after = _distinct_tokens(before["memory"]), _distinct_tokens(after["memory"])
    # At most one call's path (D's: prompt and up to 3 generated tokens) went; SGLang's order alone drops three.
    assert held_after >= held_before - (PREFIX + TAIL + 3), (held_before, held_after)
    assert after["hook_errors"] == 0
    Session(host_server, "swap-fresh", prompts="swap")  # flushed
    assert _batch(host_server, s, "ABC") == (outputs, [0, 0, 0])


def _batch(server, session: Session, agents: str) -> tuple[list[list[int]], list[int]]:
    """One /generate call with the agents' prompts (SGLang admits them in one batch)."""
    body = {"input_ids": [session.ids(a, TAIL) for a in agents],
            "sampling_params": {"max_new_tokens": 3, "temperature": 0}}
    resp = requests.post(server.base_url + "/generate", json=body, timeout=120)
    resp.raise_for_status()
    return [o["output_ids"] for o in resp.json()], [o["meta_info"]["cached_tokens"] for o in resp.json()]


def _distinct_tokens(memory: dict) -> int:
    """Tokens the two tiers hold, each once: a prefix on both counts on the device only."""
    device_used = memory["device_total"] - memory["device_free"]
    return device_used + memory["host_in_tree"] - memory["host_duplicates"]


def test_a_thousand_requests_under_pressure_leave_no_slot_or_lock_behind(host_server):
    """20 agents, 1,000 requests from 8 clients at once, a distance push every 40 requests (so
    prefetch, holds and their expiry all run): afterwards every device token is free or
    evictable again, every host token is free or referenced by the tree, and nothing stays
    locked or held."""
    import random
    import threading
    import time

    s = Session(host_server, "churn")
    agents = [f"g{i}" for i in range(20)]
    lock = threading.Lock()
    sent = [0]
    errors: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            with lock:
                if sent[0] >= 1000:
                    return
                sent[0] += 1
                n = sent[0]
                if n % 40 == 0:
                    s.push({a: float(rng.randrange(4)) for a in rng.sample(agents, 6)}, replace=True)
            try:
                s.generate(rng.choice(agents), tail=TAIL + n % 3)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rng = random.Random(99)
    for _ in range(10):  # quiet moments between steps, when prefetch gets its turn
        s.push({a: 0.0 for a in rng.sample(agents, 3)}, replace=True)
        time.sleep(0.3)
        s.generate(rng.choice(agents), tail=TAIL + 1)
    s.push({}, replace=True)  # nobody near: every hold is released at the next iteration
    for _ in range(60):
        stats = scheduler_stats(host_server)
        if stats["host_kv"]["held"] == 0 and stats["memory"]["protected"] == 0:
            break
        time.sleep(0.5)
    mem = stats["memory"]
    assert stats["hook_errors"] == 0 and stats["pending_requests"] == 0 and stats["host_kv"]["held"] == 0
    assert mem["protected"] == 0 and mem["device_free"] + mem["evictable"] == mem["device_total"], mem
    assert mem["host_free"] + mem["host_in_tree"] == mem["host_total"], mem
    assert 0 <= mem["host_duplicates"] <= mem["host_in_tree"], mem
    kv = stats["host_kv"]
    assert kv["hits"] > 0 and kv["bytes_h2d"] > 0 and kv["bytes_d2h"] > 0
    print(f"\n1,000 requests, 20 agents, host tier: {kv}")
