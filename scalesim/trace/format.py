"""The trace format: one JSON object per line, one line per LLM request, in issue order.

Fields (all required unless marked optional):

| field | type | meaning |
|---|---|---|
| `step` | number >= 0 | simulation step (or time) at which the request is issued; non-decreasing |
| `agent` | string | the calling agent's id |
| `prefix` | string | identity of the request's reusable prefix (e.g. a hash of persona + memories) |
| `prefix_len` | int >= 1 | prefix length in tokens (the unit of KV state size) |
| `adapter` | string or null | LoRA adapter the request uses (optional, default null) |
| `output_len` | int >= 0 | generated tokens |
| `next_step` | number or null | true step of this agent's next request; null if it never calls again |

Example: `{"step": 3, "agent": "a7", "prefix": "a7:p", "prefix_len": 1650, "adapter": "a7",
"output_len": 24, "next_step": 5}`

Beside a trace, the distances a simulation pushed (`read_pushes`, `write_pushes`): one line per
step, `{"step": 3, "distances": {"a7": 2, ...}}`, the full table pushed before that step's calls
(in steps from it; an agent it leaves out is unknown).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from scalesim.distance.table import DistanceError, validate_distances


class TraceError(ValueError):
    """A malformed trace line: the message names the line, field and value."""


@dataclass(frozen=True)
class TraceRecord:
    step: float
    agent: str
    prefix: str
    prefix_len: int
    output_len: int
    next_step: float | None
    adapter: str | None = None


def _number(line: int, name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TraceError(f"line {line}: {name} must be a finite number >= 0, got {value!r}")
    return value


def _int(line: int, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TraceError(f"line {line}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(line: int, name: str, value: object, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise TraceError(f"line {line}: {name} must be a non-empty string, got {value!r}")
    return value


def parse_record(obj: object, line: int) -> TraceRecord:
    if not isinstance(obj, dict):
        raise TraceError(f"line {line}: expected a JSON object, got {type(obj).__name__}")
    missing = {"step", "agent", "prefix", "prefix_len", "output_len", "next_step"} - obj.keys()
    if missing:
        raise TraceError(f"line {line}: missing field(s) {', '.join(sorted(missing))}")
    step = _number(line, "step", obj["step"])
    next_step = _number(line, "next_step", obj["next_step"], allow_none=True)
    if next_step is not None and next_step <= step:
        raise TraceError(f"line {line}: next_step {next_step} must be after step {step}")
    return TraceRecord(
        step=step,
        agent=_str(line, "agent", obj["agent"]),
        prefix=_str(line, "prefix", obj["prefix"]),
        prefix_len=_int(line, "prefix_len", obj["prefix_len"], 1),
        output_len=_int(line, "output_len", obj["output_len"], 0),
        next_step=next_step,
        adapter=_str(line, "adapter", obj.get("adapter"), allow_none=True),
    )


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for every non-blank line; `TraceError` on one that is not JSON."""
    with open(path) as f:
        for i, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield i, json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(f"line {i}: not JSON ({exc.msg})") from None


def read_trace(path: Path) -> list[TraceRecord]:
    records: list[TraceRecord] = []
    for i, obj in _json_lines(path):
        record = parse_record(obj, i)
        if records and record.step < records[-1].step:
            raise TraceError(f"line {i}: step {record.step} goes back from {records[-1].step}")
        records.append(record)
    return records


def write_trace(path: Path, records: Iterable[TraceRecord]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")


def read_pushes(path: Path) -> dict[float, dict[str, float]]:
    """Step -> the distances pushed before it."""
    out: dict[float, dict[str, float]] = {}
    for i, obj in _json_lines(path):
        if not isinstance(obj, dict) or set(obj) != {"step", "distances"}:
            raise TraceError(f"line {i}: a push needs exactly the fields step and distances")
        _number(i, "step", obj["step"])
        try:
            out[float(obj["step"])] = validate_distances(obj["distances"])
        except DistanceError as exc:
            raise TraceError(f"line {i}: {exc}") from None
    return out


def write_pushes(path: Path, pushes: dict[float, dict[str, float]]) -> None:
    with open(path, "w") as f:
        for step, distances in pushes.items():
            f.write(json.dumps({"step": step, "distances": distances}) + "\n")
