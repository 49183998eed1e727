"""The plugin refuses to run against an SGLang that lacks a target it hooks."""

from __future__ import annotations

import pytest

from scalesim.engine.sglang import plugin, targets

MISSING = "sglang.srt.managers.scheduler.Scheduler.no_such_method_in_0_5_23"


def test_all_targets_exist_in_the_pinned_release():
    targets.check_version()
    targets.check_targets(targets.HOOK_TARGETS + targets.LAUNCH_TARGETS)


def test_missing_target_is_named_with_the_pinned_version():
    with pytest.raises(targets.TargetMissingError) as err:
        targets.check_targets((targets.SCHEDULER_INTERNAL_STATE, MISSING))
    assert MISSING in str(err.value)
    assert "pinned to sglang==0.5.23" in str(err.value)


def test_plugin_load_exits_on_missing_target(monkeypatch):
    # SGLang's loader swallows ordinary exceptions; the plugin must stop the process instead.
    monkeypatch.setattr(targets, "HOOK_TARGETS", (MISSING,))
    with pytest.raises(SystemExit, match="scalesim plugin: SGLang target " + MISSING):
        plugin.load()


def test_wrong_sglang_version_is_refused(monkeypatch):
    monkeypatch.setattr(targets, "installed_sglang_version", lambda: "0.5.99")
    with pytest.raises(targets.TargetMissingError, match="pinned to sglang==0.5.23 but sglang 0.5.99 is installed"):
        targets.check_version()
