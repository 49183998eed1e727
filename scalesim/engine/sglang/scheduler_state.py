"""ScaleSim's state inside the scheduler process, kept beside SGLang's objects, not on them.

SGLang runs one scheduler per process (one per tensor/data-parallel rank), so this is one
object per process (`current()`): the eviction strategy, which SGLang builds without a
reference to its scheduler, reads the same state as the scheduler's message handlers.

What it holds:
- the pushed distances (`table`, a `DistanceTable`; the scheduler's clock drives TTL expiry)
  and a `LearnedEstimator` fed by each tagged request; pushed distances win over learned ones;
- which agent each request belongs to (`ScaleSimAgentReq` arrives just before the request,
  on the same socket): a bounded map, so requests that never reach the tree cannot leak it;
- which agents own each radix node: a weak side table keyed by node, so a node deleted by
  eviction, a cache flush, or an aborted or retracted request takes its entry with it;
- each agent's latest call tail (`_mark_tail`): the part of its latest call past the prefix
  its last two calls shared, or, for a first call on the chat route, past the prompt's messages
  before the last (`chat_prefix`), ranked with unowned state until the agent's next call;
- counters for the stats route and Prometheus (`AgentCounters`).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from scalesim.distance import DistanceError, DistanceTable
from scalesim.distance.estimators import LearnedEstimator
from scalesim.engine.sglang.chat_prefix import PromptPrefix
from scalesim.engine.sglang.counters import AgentCounters
from scalesim.policy.eviction import UNKNOWN

logger = logging.getLogger(__name__)

# Requests announced but not yet seen by the tree (in flight, or refused by SGLang after the
# announcement). Far above any realistic number of concurrent requests on one scheduler.
MAX_PENDING_RIDS = 65_536


class SchedulerState:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.table = DistanceTable(clock=clock)
        self.learned = LearnedEstimator()
        self.learned_enabled = True
        self.counters = AgentCounters()
        self._agent_of_rid: OrderedDict[str, str] = OrderedDict()
        self._prompt_prefix_of_rid: OrderedDict[str, PromptPrefix] = OrderedDict()
        self._owners: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        # agent -> the path its latest checkpoint ended at (`_path_refs`: deepest node first)
        self._latest: dict[str, list[weakref.ref]] = {}
        self._stale: weakref.WeakSet[Any] = weakref.WeakSet()  # owned once, left by every owner
        # agent -> the path of its latest finished call (deepest first), and that call's prompt length
        self._ended: dict[str, tuple[list[weakref.ref], int]] = {}
        self._prefix: dict[str, weakref.ref] = {}  # agent -> where its calls last parted (its shared prefix's end)
        self._tails: weakref.WeakSet[Any] = weakref.WeakSet()  # nodes of agents' latest call tails
        self._tail_of: dict[str, list[weakref.ref]] = {}  # agent -> its nodes in `_tails`
        self.hook_errors = 0
        self.tree_timing: dict[str, list[float]] = {}  # op -> [calls, seconds]; SCALESIM_TREE_TIMING=1
        self.pushes_applied = 0
        self.pushes_rejected = 0
        self.apply_seconds_total = 0.0  # time the scheduler spent applying pushes
        self.apply_seconds_max = 0.0

    # -- messages from the HTTP process ---------------------------------------------------

    def apply(self, epoch: int, distances: dict[str, float], *, replace: bool, ttl: float | None) -> None:
        start = time.perf_counter()
        try:
            self.table.update(distances, epoch, replace=replace, ttl=ttl)
            self.pushes_applied += 1
            elapsed = time.perf_counter() - start
            self.apply_seconds_total += elapsed
            self.apply_seconds_max = max(self.apply_seconds_max, elapsed)
        except DistanceError as exc:
            # The HTTP process validated the same update against the same history, so this
            # means the two tables diverged (e.g. several tokenizer workers): keep serving.
            self.pushes_rejected += 1
            logger.warning("ScaleSim: distance update rejected in the scheduler: %s", exc)

    def announce(self, rid: str, agent: str, at: float, prefix: PromptPrefix | None = None) -> None:
        """Request `rid` of `agent` arrived at time `at` (the HTTP process's clock), its prompt's
        prefix ending as `prefix` says where the HTTP process knows it; sent just before the
        request itself."""
        for pending, value in ((self._agent_of_rid, agent), (self._prompt_prefix_of_rid, prefix)):
            if value is None:
                continue
            pending[rid] = value
            if len(pending) > MAX_PENDING_RIDS:
                pending.popitem(last=False)
        self.learned.observe(agent, max(at, self.learned.now))

    # -- distances ------------------------------------------------------------------------

    def distance(self, agent: str) -> float:
        """Pushed distance, else learned, else `UNKNOWN`."""
        pushed = self.table.get(agent)
        if pushed is not None:
            return pushed
        if self.learned_enabled:
            # "Now" is the latest arrival, not this process's clock: tensor-parallel ranks
            # receive the same messages and so compute the same distances.
            learned = self.learned.distance(agent, self.learned.now)
            if learned is not None:
                return learned
        return UNKNOWN

    def nearest(self, agents: Any) -> float:
        """The nearest distance among `agents` (`UNKNOWN` if none is known, or no agents):
        the distance of state they share, a radix node or an adapter."""
        return min((self.distance(agent) for agent in agents), default=UNKNOWN)

    def node_distance(self, node: Any) -> float:
        """The nearest owner's distance (`UNKNOWN` for an untagged node or a call tail)."""
        if node in self._tails:
            return UNKNOWN
        return self.nearest(self._owners.get(node, ()))

    def node_owners(self, node: Any) -> frozenset[str]:
        """The agents whose calls cached `node` (empty for an untagged node)."""
        return frozenset(self._owners.get(node, ()))

    def is_tail(self, node: Any) -> bool:
        """Whether `node` belongs to an agent's latest call tail (kept out of distance ranking)."""
        return node in self._tails

    def prefix_node(self, agent: str) -> Any:
        """Where the prefix the agent's last two calls shared ends (None until two calls forked
        below the root): what is worth keeping, or loading ahead, of the agent's state."""
        ref = self._prefix.get(agent)
        return ref() if ref is not None else None

    # -- radix-tree ownership -------------------------------------------------------------

    def agent_of(self, req: Any) -> str | None:
        """The agent announced for `req`."""
        return _announced(self._agent_of_rid, req)

    def first_call_prefix(self, req: Any) -> int | None:
        """Where a finished call's prompt prefix ends, in tokens: announced with the request
        (`chat_prefix`), the prompt's own tokens there, and nothing left in the tree of the
        agent's previous call to find it from (the fork, `_mark_tail`). The caller makes it a
        node boundary before `tag_path`."""
        prefix = _announced(self._prompt_prefix_of_rid, req)
        agent = self.agent_of(req)
        if prefix is None or agent is None or not req.finished():
            return None
        ended = self._ended.get(agent)
        if ended is not None and _deepest_alive(ended[0])[0] is not None:
            return None
        return prefix.tokens if prefix.matches(req.origin_input_ids) else None

    def tag_path(self, req: Any, node: Any, prefix_tokens: int | None = None) -> None:
        """Record the request's agent as an owner of every node from `node` (where its
        checkpoint ended) up to the root (the root is never evicted and not tracked), and
        drop it from the branch its previous checkpoint left (`_leave_stale_branch`).
        `prefix_tokens` (`first_call_prefix`, a node boundary on the path): where the call's
        tail starts when no previous call tells."""
        agent = self.agent_of(req)
        if agent is None or node is None:
            return
        owners = self._owners
        latest = node
        while node is not None and node.parent is not None:
            got = owners.get(node)
            if got is None:
                owners[node] = {agent}
            elif agent in got:
                break  # this node and its ancestors were tagged by an earlier checkpoint
            else:
                got.add(agent)
            node = node.parent
        path = _path_refs(latest)  # recorded for the agent's next call by both
        self._leave_stale_branch(agent, latest, path)
        self._mark_tail(agent, latest, req, path, prefix_tokens)

    def _leave_stale_branch(self, agent: str, latest: Any, path: list[weakref.ref]) -> None:
        """The agent's state is the path of its latest checkpoint. Where that path left the
        previous one (a simulation agent's prompt is its private prefix plus a new situation
        each call), the previous branch below the fork (the old situation and answer) is not
        the agent's any more: it loses the agent as owner, so with no other owner it goes
        first (`UNKNOWN`), before any agent's prefix. Otherwise a near agent's dead tails,
        one per call, would outlive far agents' prefixes in both tiers. A path that extends
        the previous one (a multi-turn conversation) leaves nothing behind."""
        previous, _ = _deepest_alive(self._latest.get(agent, ()))
        self._latest[agent] = path
        if previous is None or previous is latest:
            return
        on_path = _ancestors(latest)
        owners = self._owners
        node = previous
        while node is not None and node.parent is not None and node not in on_path:
            got = owners.get(node)
            if got is not None and agent in got:
                got.discard(agent)
                if not got:
                    del owners[node]
                    self._stale.add(node)
            node = node.parent

    def _mark_tail(self, agent: str, latest: Any, req: Any, path: list[weakref.ref],
                   prefix_tokens: int | None = None) -> None:
        """Rank the agent's latest call past its shared prefix (`node_distance`: `UNKNOWN`).

        The fork is where this call's path leaves the path of the agent's previous finished
        call. In a simulation each call is the agent's prefix plus a new situation, and the
        next call forks at the same place, so the situation and answer below the fork will not
        be read again; kept at the agent's distance, a near agent's tail (some 150 tokens)
        would outlive a far agent's whole prefix. Marked only when the call forked below the
        root and inside the previous call's prompt: a call that holds the whole previous
        prompt (a conversation: the previous answer may be tokenized anew, so the path may
        still fork inside it) reads its whole path again next time, and calls sharing nothing
        tell nothing. Only nodes the agent owns alone are marked. The marks move with each
        checkpoint; the next call's fork leaves this tail behind for good (`_leave_stale_branch`).
        With no previous call to fork from, a first call's prefix end comes from its prompt
        (`prefix_tokens`), and the nodes below that boundary are its tail."""
        for ref in self._tail_of.pop(agent, ()):
            node = ref()
            if node is not None:
                self._tails.discard(node)
        ended = self._ended.get(agent)
        base, whole = _deepest_alive(ended[0]) if ended is not None else (None, False)
        if req.finished():
            self._ended[agent] = (path, len(req.origin_input_ids))
        if base is None:
            if prefix_tokens is not None:
                self._mark_below_depth(agent, latest, prefix_tokens)
            return
        on_base = _ancestors(base)
        below: list[Any] = []
        node = latest
        while node is not None and node not in on_base:
            below.append(node)
            node = node.parent
        fork = node
        if fork is None or fork.parent is None or _depth(fork) >= ended[1]:
            self._prefix.pop(agent, None)
            return
        if fork is base and not whole and fork is not self.prefix_node(agent):
            # This call passes through what remains of the previous one, whose lower part is
            # gone: where the two part is unknown, unless that is where the agent's calls
            # parted before (its tail was evicted first, as it should be). A node boundary
            # elsewhere may be only where a chunked prefill stopped: taken for the fork, it
            # marked the rest of the agent's prefix as a tail at every call, evicted first.
            return
        self._set_tail(agent, fork, below)

    def _mark_below_depth(self, agent: str, latest: Any, tokens: int) -> None:
        """The path's nodes below the boundary `tokens` deep are the agent's tail; nothing is
        marked unless a node ends exactly there (a boundary elsewhere is not the prefix's end)."""
        depth, node, below = _depth(latest), latest, []
        while node is not None and node.parent is not None and depth > tokens:
            below.append(node)
            depth -= len(node.key)
            node = node.parent
        if node is not None and node.parent is not None and depth == tokens and below:
            self._set_tail(agent, node, below)

    def _set_tail(self, agent: str, prefix_end: Any, below: list[Any]) -> None:
        self._prefix[agent] = weakref.ref(prefix_end)
        owners = self._owners
        tails = [n for n in below if owners.get(n) == {agent}]
        self._tails.update(tails)
        self._tail_of[agent] = [weakref.ref(n) for n in tails]

    def on_split(self, child: Any, new_parent: Any) -> None:
        """A split gives the new parent node the child's owners (it is on all their paths)."""
        owners = self._owners.get(child)
        if owners:
            self._owners[new_parent] = set(owners)

    def on_evict(self, node: Any, tokens: int) -> None:
        owners = self._owners.get(node)
        if not owners:
            reason = "stale" if node in self._stale else "untagged"
            self.counters.evicted_node(reason, tokens)
            self.counters.evicted(None, reason, tokens)
            return
        if node in self._tails:
            reason = "tail"
        else:
            reason = "farthest" if self.node_distance(node) != UNKNOWN else "no_distance"
        self.counters.evicted_node(reason, tokens)
        for agent in owners:
            self.counters.evicted(agent, reason, tokens)

    def on_release(self, req: Any) -> None:
        """A request gave its KV back to the tree: count its prompt's cached and recomputed
        tokens (once, when it finished) and forget its announcement."""
        if not req.finished():
            return  # retracted: it comes back, and counts then
        agent = self.agent_of(req)
        self._agent_of_rid.pop(req.rid, None)
        self._prompt_prefix_of_rid.pop(req.rid, None)
        prompt = len(req.origin_input_ids)
        cached = min(req.cached_tokens, prompt)
        self.counters.prefill(agent, cached, prompt - cached)

    def reset_tree(self) -> None:
        """The radix cache was flushed: no node survives."""
        self._owners.clear()
        self._latest.clear()
        self._stale.clear()
        self._ended.clear()
        self._prefix.clear()
        self._tails.clear()
        self._tail_of.clear()

    # -- reporting ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        return {
            "distance_epoch": self.table.epoch,
            "agents_with_distance": len(self.table),
            "agents_with_learned_distance": self.learned.known(),
            "learned_distances": self.learned_enabled,
            "distance_pushes_applied": self.pushes_applied,
            "distance_pushes_rejected": self.pushes_rejected,
            "distance_push_apply_ms_mean": 1000 * self.apply_seconds_total / max(self.pushes_applied, 1),
            "distance_push_apply_ms_max": 1000 * self.apply_seconds_max,
            "pending_requests": len(self._agent_of_rid),
            "hook_errors": self.hook_errors,
            "tagged_nodes": len(self._owners),
            **({"tree_timing": {op: {"calls": int(c), "seconds": t} for op, (c, t) in self.tree_timing.items()}}
               if self.tree_timing else {}),
            **self.counters.report(),
        }


def _announced(pending: OrderedDict[str, Any], req: Any) -> Any:
    """What was announced for `req`'s rid. SGLang derives rids for parallel sampling and
    batches (`<rid>_<i>`), so the announced base rid is looked up too."""
    rid = req.rid
    if not isinstance(rid, str):
        return None
    found = pending.get(rid)
    if found is None and "_" in rid:
        found = pending.get(rid.rsplit("_", 1)[0])
    return found


def _path_refs(node: Any) -> list[weakref.ref]:
    """Weak references to `node` and its ancestors below the root, deepest first."""
    refs = []
    while node is not None and node.parent is not None:
        refs.append(weakref.ref(node))
        node = node.parent
    return refs


def _deepest_alive(refs: Any) -> tuple[Any, bool]:
    """The deepest node of a path recorded by `_path_refs` that still exists (None if none), and
    whether it is the path's end. Eviction takes leaves first, so a call's end (its answer, a
    tail: evicted first by design) is often gone by the agent's next call while the rest of its
    path remains: the fork and the branch to leave behind are found from what remains. With only
    the end node recorded, a dead end hid the fork, so the next call's tail kept the agent's
    distance, and the surviving part of the old branch got it back (debate, 200 agents: some
    14,000 tokens of such tails held in the tiers)."""
    for i, ref in enumerate(refs):
        node = ref()
        if node is not None:
            return node, i == 0
    return None, False


def _ancestors(node: Any) -> set[Any]:
    """`node` and every node above it, the root included."""
    found = set()
    while node is not None:
        found.add(node)
        node = node.parent
    return found


def _depth(node: Any) -> int:
    """Tokens on the path from the root to the end of `node`."""
    tokens = 0
    while node is not None and node.parent is not None:
        tokens += len(node.key)
        node = node.parent
    return tokens


_STATE: SchedulerState | None = None


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """A hook that never raises into SGLang: hints are advisory, and so is our bookkeeping.
    A failure is logged (the first ten) and counted (`hook_errors` in the stats; the tests
    require 0). The hook's result is always None (BEFORE and AFTER hooks then change nothing)."""

    @functools.wraps(fn)
    def hook(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            state = current()
            state.hook_errors += 1
            if state.hook_errors <= 10:
                logger.exception("ScaleSim hook %s failed (request served unchanged)", fn.__name__)

    return hook


def current() -> SchedulerState:
    """This process's state (created on first use)."""
    global _STATE
    if _STATE is None:
        _STATE = SchedulerState()
    return _STATE
