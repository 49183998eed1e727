"""ScaleSim's SGLang integration: the only package that imports SGLang.

- `plugin`: the SGLang plugin (entry point group `sglang.srt.plugins`), run in every SGLang
  process; checks its hook targets and registers its hooks.
- `targets`: the SGLang attributes ScaleSim relies on, checked at import time.
- `launch`: `scalesim serve`: argument pass-through, CPU defaults, validation, launch.
- `patches`: applying and checking the small diffs in `patches/` against the pinned release.
- `doctor`: the environment report behind `scalesim doctor`.
"""

# The entry point name in pyproject.toml (group `sglang.srt.plugins`). Kept here, free of SGLang
# imports, because the launcher must read it before SGLang may be imported.
PLUGIN_NAME = "scalesim"
PLUGIN_GROUP = "sglang.srt.plugins"
DEVICE_PLUGIN_NAME = "scalesim-device"  # device seams only (host_tier.load), loaded even when disabled
