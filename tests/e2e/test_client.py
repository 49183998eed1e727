"""The client against the shared live server: tagged completions, pushes, registration, errors."""

from __future__ import annotations

import asyncio

import pytest

from scalesim.client import AgentSpec, AsyncScaleSimClient, ScaleSimClient, ScaleSimError

pytestmark = pytest.mark.server


@pytest.fixture(autouse=True)
def empty_table_after(server):
    """The shared server's distance table is left empty, as the other tests expect to find it."""
    yield
    with ScaleSimClient(server.base_url) as client:
        client.push_step({}, replace=True)


def test_sync_client_tags_pushes_registers_and_reports_refusals(server):
    with ScaleSimClient(server.base_url) as client:
        assert client.has_scalesim()
        reply = client.push_step({"client/ada": 0.0, "client/bo": 3.0})
        assert reply["accepted"] == 2 and client.table.get("client/bo") == 3.0
        assert client.register_agents([AgentSpec("client/ada", adapter="a0")])["registered"] == 1
        first = client.complete("client/ada", "The baker of the town says", max_tokens=4)
        again = client.complete("client/ada", "The baker of the town says", max_tokens=4)
        assert first.text == again.text and first.completion_tokens == 4 and first.prompt_tokens > 0
        assert again.cached_tokens > 0  # the agent's prompt is in the prefix cache
        chat = [{"role": "system", "content": "You are Ada, the baker of the town."},
                {"role": "user", "content": "What do you bake today?"}]
        said = client.chat("client/ada", chat, max_tokens=4)
        said_again = client.chat("client/ada", chat, max_tokens=4)
        assert said.text == said_again.text and 1 <= said.completion_tokens <= 4
        assert said.prompt_tokens > len(chat[0]["content"].split())  # the chat template's tokens too
        assert said_again.cached_tokens > 0
        with pytest.raises(ScaleSimError) as refused:
            client.register_agents([AgentSpec("client/cy", adapter="no-such-adapter")])
        assert refused.value.status == 400 and "no-such-adapter" in str(refused.value)
        stats = client.stats()
        assert stats["schedulers"][0]["hook_errors"] == 0


def test_async_client_runs_a_step_concurrently(server):
    async def step() -> list:
        async with AsyncScaleSimClient(server.base_url) as client:
            await client.push_step({f"client/a{i}": 0.0 for i in range(4)})
            raw = [client.complete(f"client/a{i}", f"Agent {i} wakes up and", max_tokens=3) for i in range(4)]
            chats = [client.chat(f"client/a{i}", [{"role": "user", "content": f"Agent {i} wakes up. Then?"}],
                                 max_tokens=3) for i in range(4)]
            return await asyncio.gather(*raw, *chats)

    done = asyncio.run(step())
    assert [d.agent_id for d in done] == [f"client/a{i}" for i in range(4)] * 2
    assert all(d.completion_tokens == 3 and d.latency_s > 0 for d in done[:4])
    assert all(1 <= d.completion_tokens <= 3 and d.latency_s > 0 for d in done[4:])


def test_unreachable_server_is_a_clear_error():
    with ScaleSimClient("http://127.0.0.1:9", max_retries=0, timeout=2) as client:
        with pytest.raises(ScaleSimError, match="unreachable"):
            client.stats()
