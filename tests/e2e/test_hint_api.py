"""The distance hint API on a live server: accepted updates reach the scheduler; bad ones change nothing."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.server


def _stats(server) -> dict:
    resp = requests.get(server.base_url + "/scalesim/v1/stats", timeout=30)
    resp.raise_for_status()
    return resp.json()


def _post(server, path: str, body) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else None
    return requests.post(server.base_url + path, json=None if data is not None else body, data=data, timeout=30)


def test_distances_reach_the_scheduler_and_bad_input_changes_nothing(server):
    ok = _post(server, "/scalesim/v1/distances", {"epoch": 10, "distances": {"a": 1, "b": 2.5}, "unit": "steps"})
    assert ok.status_code == 200
    assert ok.json() == {"accepted": 2, "changed": 2, "epoch": 10, "agents_with_distance": 2}
    partial = _post(server, "/scalesim/v1/distances", {"epoch": 10, "distances": {"c": 0}, "ttl": 60})
    assert partial.json()["agents_with_distance"] == 3

    before = _stats(server)
    assert (before["http"]["distance_epoch"], before["http"]["agents_with_distance"]) == (10, 3)
    (sched,) = before["schedulers"]
    assert (sched["distance_epoch"], sched["agents_with_distance"]) == (10, 3)

    bad = [
        ({"epoch": 9, "distances": {"a": 1}}, "epoch 9 is older than the table's epoch 10"),
        ({"epoch": 11, "distances": {"a": -1}}, "distances['a'] must be finite and >= 0, got -1"),
        ({"epoch": 11, "distances": {"a": "near"}}, "distances['a'] must be a number, got 'near'"),
        ({"epoch": 11, "distances": {"a": 1}, "unit": "parsecs"}, "unit must be 'steps' for this table, got 'parsecs'"),
        ({"epoch": 11, "distances": [1, 2]}, "distances must be a mapping of agent_id to number, got list"),
        ({"epoch": 11}, "missing field(s) distances"),
        ({"epoch": 11, "distances": {}, "colour": "red"},
         "unknown field(s) colour (valid: distances, epoch, replace, ttl, unit)"),
        ({"epoch": 11, "distances": {"a": 1}, "replace": "yes"}, "replace must be true or false, got 'yes'"),
        (b"{not json", None),
        ([1, 2], "body must be a JSON object, got list"),
    ]
    for body, message in bad:
        resp = _post(server, "/scalesim/v1/distances", body)
        assert resp.status_code == 400, body
        if message is not None:
            assert resp.json() == {"error": message}
    assert _stats(server) == {**before, "schedulers": [{**sched}]}

    # The server keeps serving.
    out = requests.post(server.base_url + "/generate",
                        json={"text": "Hello", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}, timeout=60)
    assert out.status_code == 200


def test_reference_update_payload_is_a_full_replacement(server):
    epoch = _stats(server)["http"]["distance_epoch"] + 1
    resp = _post(server, "/v1/update", {"agent_data": {"x": 3}, "timestep_data": {"1": ["y", "x"], "4": ["z"]},
                                        "timestep_cnt": epoch})
    assert resp.status_code == 200
    assert resp.json() == {"accepted": 3, "changed": resp.json()["changed"], "epoch": epoch, "agents_with_distance": 3}
    (sched,) = _stats(server)["schedulers"]
    assert (sched["distance_epoch"], sched["agents_with_distance"]) == (epoch, 3)
    resp = _post(server, "/v1/update", {"timestep_data": {"soon": ["y"]}, "timestep_cnt": epoch + 1})
    assert resp.status_code == 400 and resp.json() == {"error": "timestep_data key 'soon' is not a number"}
    resp = _post(server, "/v1/update", {"agent_data": {"x": 1}, "timestep_cnt": epoch})  # a replay
    assert resp.status_code == 400
    assert resp.json() == {"error": f"epoch {epoch} already has a full table; a replacement needs a newer epoch"}
    assert _stats(server)["schedulers"][0]["agents_with_distance"] == 3


def test_agent_identity_and_per_request_hints_through_the_openai_sdk(server):
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", timeout=60)
    before = _stats(server)["http"]
    chat = dict(model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
    client.chat.completions.create(**chat, extra_body={"agent_id": "hinted", "invocation_distance": 4})
    client.chat.completions.create(**chat, user="by-user")
    client.completions.create(model="default:a1", prompt="Hi", max_tokens=2, temperature=0)
    client.completions.create(model="default", prompt="Hi", max_tokens=2, temperature=0)
    with pytest.raises(openai.BadRequestError, match="invocation_distance needs an agent"):
        client.chat.completions.create(**chat, extra_body={"invocation_distance": 1})
    with pytest.raises(openai.BadRequestError, match="must be finite and >= 0"):
        client.chat.completions.create(**chat, extra_body={"agent_id": "x", "invocation_distance": -1})

    after = _stats(server)
    http = after["http"]
    assert http["requests_tagged"]["body"] == before["requests_tagged"]["body"] + 1
    assert http["requests_tagged"]["user"] == before["requests_tagged"]["user"] + 1
    assert http["requests_tagged"]["adapter"] == before["requests_tagged"]["adapter"] + 1
    assert http["requests_untagged"] == before["requests_untagged"] + 1
    # The hint reached the scheduler's table as a partial update at the current epoch.
    (sched,) = after["schedulers"]
    assert sched["agents_with_distance"] == http["agents_with_distance"] == before["agents_with_distance"] + 1


def test_openapi_schema_documents_the_routes(server):
    spec = requests.get(server.base_url + "/openapi.json", timeout=30).json()
    body = spec["paths"]["/scalesim/v1/distances"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["epoch", "distances"]
    assert "/v1/update" in spec["paths"] and "/scalesim/v1/stats" in spec["paths"]


def test_agent_registration_adapter_mapping_and_bad_input(server):
    before = _stats(server)["http"]["agents_registered"]
    ok = _post(server, "/scalesim/v1/agents", {"agents": [
        {"agent_id": "reg-1", "adapter": "a0", "prefix": "You are Ada, a baker."}, {"agent_id": "reg-2"}]})
    assert ok.status_code == 200 and ok.json() == {"registered": 2, "agents_registered": before + 2}
    got = requests.get(server.base_url + "/scalesim/v1/agents/reg-1", timeout=30)
    assert got.json() == {"agent_id": "reg-1", "adapter": "a0", "prefix": "You are Ada, a baker.", "adapter_path": None}
    missing = requests.get(server.base_url + "/scalesim/v1/agents/nobody", timeout=30)
    assert missing.status_code == 404 and missing.json() == {"error": "agent 'nobody' is not registered"}

    bad = [
        ({"agents": [{"agent_id": "x", "adapter": "nope"}]},
         "agents[0].adapter 'nope' is not an adapter this server serves (served: a0, a1); give adapter_path to load one"),
        ({"agents": [{"agent_id": "x"}, {"agent_id": "x"}]}, "agents[1]: agent 'x' appears twice"),
        ({"agents": []}, "agents must be a non-empty list of {agent_id, adapter?, adapter_path?, prefix?}"),
        ({"agents": [{"agent_id": ""}]}, "agent_id must be a non-empty string, got ''"),
        ({"agents": [{"agent_id": "x", "prefix": 3}]}, "agents[0].prefix must be a string of at most 1000000 characters"),
        ({"agents": [{"agent_id": "x", "colour": 1}]}, "agents[0]: unknown field(s) colour (valid: adapter, adapter_path, agent_id, prefix)"),
        ({"agent": []}, "unknown field(s) agent (valid: agents)"),
    ]
    for body, message in bad:
        resp = _post(server, "/scalesim/v1/agents", body)
        assert (resp.status_code, resp.json()) == (400, {"error": message}), body
    assert _stats(server)["http"]["agents_registered"] == before + 2

    # A registered agent's requests use its adapter unless they name one.
    def complete(**extra) -> str:
        body = {"model": "default", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, **extra}
        return requests.post(server.base_url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]

    assert complete(agent_id="reg-1") == complete(model="default:a0")
    assert complete(agent_id="reg-1", lora_path="a1") == complete(model="default:a1")


def test_aborted_request_leaves_no_pending_announcement(server):
    pending = _stats(server)["schedulers"][0]["pending_requests"]
    body = {"model": "default", "prompt": "Count to a thousand:", "max_tokens": 400, "temperature": 0,
            "stream": True, "agent_id": "quitter"}
    with requests.post(server.base_url + "/v1/completions", json=body, stream=True, timeout=60) as resp:
        next(resp.iter_lines())  # first chunk, then hang up
    for _ in range(60):
        sched = _stats(server)["schedulers"][0]
        if sched["pending_requests"] == pending:
            break
        time.sleep(0.5)
    assert sched["pending_requests"] == pending and sched["hook_errors"] == 0


def test_per_push_cost_with_1000_agents(server):
    """1,000 registered agents, a full distance push and a few tagged requests per simulation
    step: the scheduler's cost per push."""
    epoch = _stats(server)["http"]["distance_epoch"] + 1
    agents = [f"agent-{i:04d}" for i in range(1000)]
    reg = _post(server, "/scalesim/v1/agents", {"agents": [{"agent_id": a} for a in agents]})
    assert reg.status_code == 200 and reg.json()["registered"] == 1000
    for step in range(20):
        table = {a: float((i + step) % 37) for i, a in enumerate(agents)}
        resp = _post(server, "/scalesim/v1/distances", {"epoch": epoch + step, "distances": table, "replace": True})
        assert resp.status_code == 200 and resp.json()["agents_with_distance"] == 1000
        if step % 5 == 0:
            out = requests.post(server.base_url + "/generate", json={
                "text": "Hello", "agent_id": agents[step], "sampling_params": {"max_new_tokens": 2}}, timeout=60)
            assert out.status_code == 200
    (sched,) = _stats(server)["schedulers"]
    assert sched["agents_with_distance"] == 1000 and sched["distance_epoch"] == epoch + 19
    assert sched["hook_errors"] == 0
    print(f"\nscheduler per-push cost, 1,000 agents: mean {sched['distance_push_apply_ms_mean']:.3f} ms, "
          f"max {sched['distance_push_apply_ms_max']:.3f} ms over {sched['distance_pushes_applied']} pushes")
