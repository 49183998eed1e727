"""Client configuration and request building (no server)."""

from __future__ import annotations

import pytest

from scalesim.client import AgentSpec, ClientConfig, ScaleSimClient
from scalesim.client.base import BASE_URL_ENV, chat_kwargs, completion_kwargs
from scalesim.distance.table import DistanceError


def test_base_url_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    with pytest.raises(ValueError, match="SCALESIM_BASE_URL"):
        ClientConfig.resolve()
    monkeypatch.setenv(BASE_URL_ENV, "http://sim-host:30000/")
    config = ClientConfig.resolve()
    assert config.base_url == "http://sim-host:30000" and config.openai_base_url == "http://sim-host:30000/v1"
    assert ClientConfig.resolve("https://other:1").base_url == "https://other:1"


@pytest.mark.parametrize("bad", [dict(base_url="sim-host:30000"), dict(timeout=0), dict(max_retries=-1)])
def test_bad_configuration_is_refused(bad):
    with pytest.raises(ValueError):
        ClientConfig(**{"base_url": "http://h:1", **bad})


def test_requests_are_tagged_with_the_agent_and_its_hints():
    config = ClientConfig("http://h:1")
    kwargs = completion_kwargs(config, "town/ada", "Hello", max_tokens=8, adapter="ada", temperature=0.0, distance=2.0)
    assert kwargs["extra_body"] == {"agent_id": "town/ada", "lora_path": "ada", "invocation_distance": 2.0}
    assert AgentSpec("ada", adapter="ada").body() == {"agent_id": "ada", "adapter": "ada"}
    with pytest.raises(DistanceError):
        completion_kwargs(config, "", "Hello", max_tokens=8, adapter=None, temperature=0.0, distance=None)
    chat = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Hello"}]
    kwargs = chat_kwargs(config, "town/ada", chat, max_tokens=8, adapter=None, temperature=0.0, distance=None)
    assert kwargs["messages"] == chat and kwargs["extra_body"] == {"agent_id": "town/ada"}
    for bad in ([], [{"role": "user"}], ["Hello"]):
        with pytest.raises(ValueError, match="messages"):
            chat_kwargs(config, "town/ada", bad, max_tokens=8, adapter=None, temperature=0.0, distance=None)


def test_a_bad_distance_table_is_refused_before_it_is_sent():
    client = ScaleSimClient("http://127.0.0.1:9")  # nothing listens: nothing may be sent
    with pytest.raises(DistanceError):
        client.push_step({"ada": -1.0})
    with pytest.raises(DistanceError):
        client.push_step({"ada": float("nan")})
    assert client.table.epoch == -1 and len(client.table) == 0  # nothing accepted yet
