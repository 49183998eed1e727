"""A tiny synthetic Qwen2 model for fast tests: real (seeded random) weights, a real tokenizer.

A byte-level BPE tokenizer trained with `tokenizers` on a small built-in English corpus, and
a 2-layer Qwen2 with hidden size 128, saved with `save_pretrained`. Outputs are gibberish but
deterministic, so greedy outputs can still be compared across servers and with transformers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DONE_MARKER = ".scalesim-complete"
VOCAB_SIZE = 1024
SEED = 1234

_CORPUS = [
    "The agents of the town wake up, cook breakfast, walk to the cafe and talk about the news.",
    "Alice meets Bob at the market. They discuss the election, the weather and the harvest.",
    "A rumour spreads through the social network, from friend to friend, hop by hop.",
    "In the debate each speaker answers the previous one, then yields the floor.",
    "User: What is the capital of France? Assistant: The capital of France is Paris.",
    "Plans, memories, reflections: every agent keeps a persona and a diary of its day.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20, step, tick, time, hour, minute.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: Path) -> Path:
    """Build the tiny model into `out_dir` once; return `out_dir`. Idempotent."""
    if (out_dir / DONE_MARKER).exists():
        return out_dir
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _train_tokenizer()
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    tmp_out = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    model.save_pretrained(tmp_out, safe_serialization=True)
    tokenizer.save_pretrained(tmp_out)
    (tmp_out / DONE_MARKER).write_text("tiny synthetic Qwen2, seeded\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_out.rename(out_dir)
    return out_dir
