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
