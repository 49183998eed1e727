"""SGLang's host KV tier (`--enable-hierarchical-cache`) on a CPU device, with ScaleSim's policy.

Tiny model in float32; a 1,024-token device pool (three 300-token prefixes) and the default host
pool of twice that (write-through: every prefix is copied to host memory when cached). Prefixes
evicted from the device come back from the host; when the host is full too, the farthest
agent's copy is the one that goes.
"""

from __future__ import annotations

import pytest
import requests

from scalesim import paths
from tests.conftest import free_port
from tests.e2e.test_eviction import PREFIX, TAIL, Session, scheduler_stats

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def host_server(tmp_path_factory):
    from scalesim.server_process import ServerProcess

    args = ["--model-path", str(paths.tiny_model_path()), "--max-total-tokens", "1024", "--dtype", "float32",
            "--enable-cache-report", "--enable-hierarchical-cache"]
    with ServerProcess(args, free_port(), tmp_path_factory.mktemp("host") / "server.log") as proc:
        proc.cache_kind = "host"
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


def test_host_memory_drops_the_farthest_agents_copy_first(host_server):
    """A (nearest) ... H (farthest) arrive in turn. The device keeps demoting its farthest prefix
    to host memory; once host memory is full too, its farthest host-only copy goes (F, then G).
    LRU would instead have dropped the oldest (A, B)."""
    s = Session(host_server, "host-order")
    agents = "ABCDEFGH"  # eight 300-token prefixes: more than device and host hold together
    s.push({a: float(i + 1) for i, a in enumerate(agents)})
    assert [s.generate(a) for a in agents] == [0] * 8
    assert [s.generate(a, tail=TAIL + 1) for a in "ACF"] == [PREFIX + TAIL, PREFIX + TAIL, 0]
    stats = scheduler_stats(host_server)
    assert stats["hook_errors"] == 0 and stats["pending_requests"] == 0
    assert requests.get(host_server.base_url + "/health", timeout=30).status_code == 200
