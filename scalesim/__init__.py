"""ScaleSim: an LLM server for large-scale multi-agent simulations.

SGLang (pinned to one release) plus a memory manager driven by each agent's invocation
distance. See DESIGN.md in the project's shared folder and README.md.
"""

__version__ = "0.1.0"

# The one SGLang release ScaleSim's hooks and patches are written against.
SGLANG_VERSION = "0.5.23"
