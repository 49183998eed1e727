"""N distinct, seeded LoRA adapters for a given base model (PEFT format).

PEFT initialises B to zero, which would make every adapter an identity; here both A and B
are drawn from a seeded normal distribution so each adapter really changes the outputs,
with a scale small enough that the model still produces text.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
DONE_MARKER = ".scalesim-complete"


def adapter_name(index: int) -> str:
    return f"agent{index:04d}"


def make_adapters(
    base_model: Path,
    out_dir: Path,
    count: int,
    *,
    rank: int = 8,
    seed: int = 0,
    std: float = 0.04,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
) -> list[Path]:
    """Write adapters `out_dir/agent0000 ...` (adapter i seeded with `seed + i`); reuse existing ones.

    Returns the adapter directories in index order.
    """
    if count < 1 or rank < 1:
        raise ValueError(f"count and rank must be >= 1, got count={count} rank={rank}")
    wanted = [out_dir / adapter_name(i) for i in range(count)]
    missing = [(i, p) for i, p in enumerate(wanted) if not (p / DONE_MARKER).exists()]
    if not missing:
        return wanted
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0)
    peft_model = get_peft_model(base, config)
    for i, path in missing:
        generator = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(f"seed={seed + i} rank={rank} std={std}\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return wanted


class AdapterError(ValueError):
    """An adapter that cannot be served with this base model and server configuration."""


# LoRA A of these reads the hidden state (in_features == hidden_size); LoRA B of the others
# writes it (out_features == hidden_size). A wrong base model shows up as a mismatch.
_READS_HIDDEN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
_WRITES_HIDDEN = ("o_proj", "down_proj")


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header (no tensor is read)."""
    import json
    import struct

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:
            raise AdapterError(f"{path} is not a safetensors file")
        header = json.loads(f.read(size))
    return {name: meta["shape"] for name, meta in header.items() if name != "__metadata__"}


def check_adapter(path: Path, *, hidden_size: int, max_rank: int | None, target_modules: set[str] | None) -> dict:
    """Check a PEFT LoRA adapter directory against a base model and the server's LoRA limits.

    Raises `AdapterError` naming the problem: missing files, rank over `max_rank`, target
    modules the server was not started with, or weights shaped for another base model.
    Returns the adapter's config.
    """
    import json

    path = Path(path)
    config_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not config_file.is_file():
        raise AdapterError(f"adapter {path}: no adapter_config.json")
    if not weights.is_file():
        raise AdapterError(f"adapter {path}: no adapter_model.safetensors")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"adapter {path}: adapter_config.json is not JSON ({exc})") from None
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"adapter {path}: rank r={rank!r} is not a positive integer")
    if max_rank is not None and rank > max_rank:
        raise AdapterError(f"adapter {path}: rank {rank} is over the server's --max-lora-rank {max_rank}")
    targets = config.get("target_modules") or []
    targets = {targets} if isinstance(targets, str) else set(targets)
    if target_modules is not None and "all" not in target_modules and not targets <= target_modules:
        extra = ", ".join(sorted(targets - target_modules))
        raise AdapterError(f"adapter {path}: target modules {extra} are not in the server's --lora-target-modules "
                           f"({', '.join(sorted(target_modules))})")
    for name, shape in _safetensors_shapes(weights).items():
        module = next((m for m in (*_READS_HIDDEN, *_WRITES_HIDDEN) if f".{m}." in name), None)
        if module is None or len(shape) != 2:
            continue
        if "lora_A" in name and module in _READS_HIDDEN and shape[1] != hidden_size:
            got = shape[1]
        elif "lora_B" in name and module in _WRITES_HIDDEN and shape[0] != hidden_size:
            got = shape[0]
        else:
            continue
        raise AdapterError(f"adapter {path}: {name} is shaped for hidden size {got}, the base model has "
                           f"{hidden_size} (an adapter for another base model)")
    return config
