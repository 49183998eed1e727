"""`scalesim doctor` reports a healthy installation."""

from __future__ import annotations

from scalesim.engine.sglang.doctor import checks


def test_every_check_passes_on_a_set_up_machine():
    results = {c.name: c for c in checks()}
    bad = [f"{c.name}: {c.value}" for c in results.values() if not c.ok]
    assert bad == []
    assert results["sglang"].value == "0.5.23 (pinned 0.5.23)"
    assert results["plugin"].value.startswith("registered;")
    assert any(name.startswith("patch 0001-") for name in results)
    assert {"device", "sgl_kernel", "model smollm2-135m-instruct", "model tiny-qwen2"} <= results.keys()
