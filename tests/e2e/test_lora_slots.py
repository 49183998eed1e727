"""Per-agent adapters under constant pressure: 32 adapters, 8 in CPU memory, 4 device slots.

Tiny model in float32 (server and HF + PEFT), so outputs compare exactly. The adapters are
registered by path (`POST /scalesim/v1/agents`), as a simulation would. Two servers run the
same simulation: ScaleSim (distance victims and prefetch in both tiers) and stock SGLang's LRU
tiers (`--lora-eviction-policy lru`); adapter loads on the request path are counted in both.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import requests

from scalesim import paths
from tests.conftest import free_port

pytestmark = pytest.mark.server

N_ADAPTERS = 32
SLOTS = 4
CPU_TIER = 8
RANK = 4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROMPT = [11, 402, 77, 903, 250, 14, 660, 31]
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def tiny_adapters():
    from scalesim.models.adapters import make_adapters

    model = paths.tiny_model_path()
    if not (model / ".scalesim-complete").exists():
        pytest.fail(f"tiny model missing at {model}: run `make setup`")
    return make_adapters(model, paths.cache_root() / "adapters" / "tests-tiny-32", N_ADAPTERS, rank=RANK, std=0.2)


@pytest.fixture(scope="module")
def peft_reference(tiny_adapters):
    """Greedy continuation of PROMPT under each adapter, from HF transformers + PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(paths.tiny_model_path(), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tiny_adapters[0]), adapter_name="agent0000")
    for path in tiny_adapters[1:]:
        model.load_adapter(str(path), adapter_name=path.name)
    out = {}
    ids = torch.tensor([PROMPT])
    for path in tiny_adapters:
        model.set_adapter(path.name)
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        out[path.name] = gen[0, len(PROMPT):].tolist()
    assert len({tuple(v) for v in out.values()}) > N_ADAPTERS // 2, "adapters should differ"
    return out


def _serve_args(tiny_adapters) -> list[str]:
    return ["--model-path", str(paths.tiny_model_path()), "--dtype", "float32", "--enable-lora",
            "--max-loaded-loras", str(CPU_TIER), "--max-loras-per-batch", str(SLOTS),
            "--max-lora-rank", str(RANK), "--lora-target-modules", *TARGETS, "--max-total-tokens", "4096",
            "--disable-radix-cache", "--enable-metrics"]


@pytest.fixture(scope="module")
def servers(tiny_adapters, tmp_path_factory):
    from scalesim.server_process import ServerProcess

    logs = tmp_path_factory.mktemp("lora")
    with ServerProcess(_serve_args(tiny_adapters), free_port(), logs / "scalesim.log") as ours:
        with ServerProcess([*_serve_args(tiny_adapters), "--lora-eviction-policy", "lru"], free_port(),
                           logs / "lru.log") as lru:
            yield {"scalesim": ours, "lru": lru}


def generate(server, agent: str) -> list[int]:
    body = {"input_ids": PROMPT, "agent_id": agent,
            "sampling_params": {"max_new_tokens": NEW_TOKENS, "temperature": 0}}
    resp = requests.post(server.base_url + "/generate", json=body, timeout=120)
    assert resp.status_code == 200, f"{agent}: {resp.status_code} {resp.text}"
    return resp.json()["output_ids"]


def lora_stats(server) -> dict:
    (sched,) = requests.get(server.base_url + "/scalesim/v1/stats", timeout=30).json()["schedulers"]
    assert sched["hook_errors"] == 0
    return sched["lora"]


def register(server, adapters) -> None:
    """Agent `agentNNNN` uses adapter `agentNNNN`, loaded from its path."""
    body = {"agents": [{"agent_id": p.name, "adapter": p.name, "adapter_path": str(p)} for p in adapters]}
    resp = requests.post(server.base_url + "/scalesim/v1/agents", json=body, timeout=300)
    assert resp.status_code == 200, resp.text


def simulate(server, schedule: list[list[str]], epoch0: int) -> list[dict[str, list[int]]]:
    """Each step: its agents' requests go out concurrently; then the distances of the next
    steps (steps until each agent's next activity) are pushed, as a simulation would."""
    outputs = []
    for step, active in enumerate(schedule):
        results: dict[str, list[int]] = {}
        threads = [threading.Thread(target=lambda a=a: results.__setitem__(a, generate(server, a))) for a in active]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outputs.append(results)
        distances: dict[str, float] = {}
        for ahead, later in enumerate(schedule[step + 1:]):
            for a in later:
                distances.setdefault(a, float(ahead))
        resp = requests.post(server.base_url + "/scalesim/v1/distances", timeout=30,
                             json={"epoch": epoch0 + step, "distances": distances, "replace": True})
        assert resp.status_code == 200, resp.text
        time.sleep(0.2)  # the simulation's own work between steps
    return outputs


def cpu_stats(server) -> dict:
    return requests.get(server.base_url + "/scalesim/v1/stats", timeout=30).json()["http"]["lora_cpu"]


def test_outputs_match_peft_and_distance_tiers_need_fewer_loads_than_lru(servers, peft_reference, tiny_adapters):
    names = sorted(peft_reference)
    rng = random.Random(0)
    schedule = [rng.sample(names, 3) for _ in range(24)]
    slot_loads, disk_loads, waits = {}, {}, {}
    for kind, server in servers.items():
        register(server, tiny_adapters)
        before, cpu_before = lora_stats(server), cpu_stats(server)
        outputs = simulate(server, schedule, epoch0=1)
        after, cpu_after = lora_stats(server), cpu_stats(server)
        slot_loads[kind] = after["misses"] - before["misses"]
        disk_loads[kind] = cpu_after["misses"] - cpu_before["misses"]
        waits[kind] = (after["wait_seconds"] - before["wait_seconds"], cpu_after["wait_seconds"] - cpu_before["wait_seconds"])
        for step in outputs:
            for agent, tokens in step.items():
                assert tokens == peft_reference[agent], (kind, agent)
    ours, ours_cpu = lora_stats(servers["scalesim"]), cpu_stats(servers["scalesim"])
    print(f"\n{len(schedule)} steps x 3 agents, {N_ADAPTERS} adapters, {CPU_TIER} in CPU memory, {SLOTS} slots. "
          f"Loads on the request path: into a slot: scalesim {slot_loads['scalesim']}, stock LRU {slot_loads['lru']}; "
          f"from disk: scalesim {disk_loads['scalesim']}, stock LRU {disk_loads['lru']}. Prefetch, slots: issued "
          f"{ours['prefetch_issued']}, used {ours['prefetch_used']}, wasted {ours['prefetch_wasted']}; CPU tier: "
          f"issued {ours_cpu['prefetch_issued']}, used {ours_cpu['prefetch_used']}, wasted {ours_cpu['prefetch_wasted']}. "
          f"Waiting for adapters (slot, disk) s: scalesim {waits['scalesim'][0]:.3f}, {waits['scalesim'][1]:.3f}; "
          f"stock LRU {waits['lru'][0]:.3f}, {waits['lru'][1]:.3f}")
    assert slot_loads["scalesim"] < slot_loads["lru"] / 2
    assert disk_loads["scalesim"] < disk_loads["lru"] / 2
    assert ours["prefetch_used"] > 0 and ours_cpu["prefetch_used"] > 0
    assert ours["wait_seconds"] > 0 and ours_cpu["wait_seconds"] > 0


def test_every_adapter_matches_peft_under_constant_eviction(servers, peft_reference, tiny_adapters):
    server = servers["scalesim"]
    register(server, tiny_adapters)
    for name in sorted(peft_reference, reverse=True):  # 32 adapters through 4 slots
        assert generate(server, name) == peft_reference[name], name


def test_concurrent_pushes_and_requests_never_mix_adapters(servers, peft_reference, tiny_adapters):
    server = servers["scalesim"]
    names = sorted(peft_reference)
    register(server, tiny_adapters)
    errors: list[str] = []
    stop = threading.Event()

    def pusher() -> None:
        rng, epoch = random.Random(1), 1000
        while not stop.is_set():
            epoch += 1
            requests.post(server.base_url + "/scalesim/v1/distances", timeout=30, json={
                "epoch": epoch, "distances": {n: rng.random() * 3 for n in rng.sample(names, 8)}})

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            name = rng.choice(names)
            try:
                got = generate(server, name)
            except AssertionError as exc:
                errors.append(str(exc))
                continue
            if got != peft_reference[name]:
                errors.append(f"{name}: {got} != {peft_reference[name]}")

    push = threading.Thread(target=pusher)
    push.start()
    clients = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    stop.set()
    push.join()
    assert errors == []
    assert lora_stats(server)["prefetch_issued"] > 0
    metrics = requests.get(server.base_url + "/metrics", timeout=30).text
    assert 'scalesim_memory_events_total{event="hits",tier="slot"}' in metrics
    assert 'scalesim_memory_events_total{event="misses",tier="cpu"}' in metrics


def test_registering_adapters_by_path_checks_them(servers, default_model, tmp_path):
    from scalesim.models.adapters import make_adapters

    server = servers["scalesim"]
    url = server.base_url + "/scalesim/v1/agents"
    fresh = make_adapters(paths.tiny_model_path(), tmp_path / "fresh", 1, rank=RANK, seed=99)[0]
    ok = requests.post(url, json={"agents": [{"agent_id": "newcomer", "adapter_path": str(fresh)}]}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert generate(server, "newcomer") != generate(server, "agent0000")  # its own adapter, loaded

    too_big = make_adapters(paths.tiny_model_path(), tmp_path / "big", 1, rank=8, seed=5)[0]
    wrong_targets = make_adapters(paths.tiny_model_path(), tmp_path / "mlp", 1, rank=RANK, seed=6,
                                  targets=("gate_proj",))[0]
    # Made for SmolLM2 (hidden size 576), with the right rank and targets.
    other_base = make_adapters(default_model, tmp_path / "other-base", 1, rank=RANK, seed=7)[0]
    cases = [
        (too_big, "rank 8 is over the server's --max-lora-rank 4"),
        (wrong_targets, "target modules gate_proj are not in the server's --lora-target-modules"),
        (other_base, "is shaped for hidden size 576, the base model has 128 (an adapter for another base model)"),
        (tmp_path / "missing", "no adapter_config.json"),
    ]
    for path, message in cases:
        resp = requests.post(url, json={"agents": [{"agent_id": "bad", "adapter_path": str(path)}]}, timeout=60)
        assert resp.status_code == 400 and message in resp.json()["error"], resp.text
    assert requests.get(url + "/bad", timeout=30).status_code == 404
    assert generate(server, "agent0001") == generate(server, "agent0001")  # still serving
