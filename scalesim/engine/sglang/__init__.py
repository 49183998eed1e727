"""ScaleSim's SGLang integration: the only package that imports SGLang.

- `plugin`: the SGLang plugin (entry point group `sglang.srt.plugins`), run in every SGLang
  process; checks its hook targets and registers its hooks.
- `targets`: the SGLang attributes ScaleSim relies on, checked at import time.
- `launch`: `scalesim serve`: argument pass-through, CPU defaults, validation, launch.
- `patches`: applying and checking the small diffs in `patches/` against the pinned release.
- `doctor`: the environment report behind `scalesim doctor`.
"""
