"""The SGLang plugin: entry point `scalesim` of group `sglang.srt.plugins`.

SGLang calls `load()` early in every process it starts (launcher, tokenizer, scheduler,
detokenizer), so hooks registered here reach the scheduler subprocess. `scalesim serve
--scalesim-disable` keeps SGLang from loading this plugin at all (stock behaviour).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from scalesim import SGLANG_VERSION, __version__
from scalesim.engine.sglang import PLUGIN_NAME, targets

logger = logging.getLogger(__name__)




def load() -> None:
    """Check the installed SGLang, then register ScaleSim's hooks.

    A missing target is fatal (`SystemExit` with the reason): SGLang's plugin loader logs and
    swallows ordinary exceptions, which would leave a server running without ScaleSim while
    claiming to have it.
    """
    try:
        targets.check_version()
        targets.check_targets(targets.HOOK_TARGETS)
    except targets.TargetMissingError as exc:
        raise SystemExit(f"scalesim plugin: {exc}") from exc
    HookRegistry.register(targets.SCHEDULER_INTERNAL_STATE, report_plugin_state, HookType.AFTER)
    logger.info("ScaleSim %s plugin loaded in pid %d", __version__, os.getpid())


def plugin_state() -> dict[str, Any]:
    """What the scheduler reports about ScaleSim under `/get_server_info` internal_states."""
    return {"version": __version__, "sglang": SGLANG_VERSION, "active": True, "pid": os.getpid()}


def report_plugin_state(result: Any, *args: Any, **kwargs: Any) -> Any:
    """AFTER hook on `Scheduler.get_internal_state`: adds a `scalesim` entry.

    This is how a client (and the tests) can see that the plugin is live inside the
    scheduler process, not only in the launcher.
    """
    result.internal_state[PLUGIN_NAME] = plugin_state()
    return result
