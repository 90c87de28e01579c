"""Builds a tiny random-weight GLM-OCR model folder, offline, for the vLLM engine tests.

No model hub is reachable from the test machines, so the tests cannot load zai-org/GLM-OCR.
This model has GLM-OCR's architecture, processor and chat format at toy dimensions
(hidden 64, 2 layers, ~0.4 M parameters): it exercises vLLM's real GLM-OCR code path (vision
tower, M-RoPE, multimodal processing, sampling) in seconds.

Random weights only produce noise that never stops, so the build then trains the model for a
few seconds to answer each GLM-OCR prompt with a fixed text (`TARGETS`) and stop, whatever
the image. The tests can then check real content, a real "stop", and (through the table
answer's repeated rule) the repetition guard.

Deterministic (fixed seed) and cached: a folder already built with the same recipe version
is reused. CLI: `python -m tests.support.tiny_glmocr OUT`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.model_cache import cached_build

# Bump when anything below changes what is written.
RECIPE_VERSION = "5"
STAMP = "tiny_glmocr.json"
SEED = 1234

# GLM's special tokens, in the order of the real tokenizer (ids follow the trained vocab).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]

# A few strings in the register of OCR output: enough merges for a byte-level BPE.
CORPUS = [
    "Text Recognition:",
    "Formula Recognition:",
    "Table Recognition:",
    "请按下列JSON格式输出图中信息:",
    '{"invoice_number": "", "date": "", "total": ""}',
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "| Item | Qty | Price |\n| --- | --- | --- |\n| Paper | 2 | 3.50 |",
    "$$E = mc^2$$ and \\frac{a}{b} + \\sqrt{x}",
    "# Title\n\nA paragraph of text, with punctuation; and numbers: 42, 3.14.",
    "文档识别 表格 公式 文本",
]

# One user turn: images then text, as GLM-OCR's own template renders it.
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] in ('image', 'image_url') -%}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{{ '\\n' }}{%- endif -%}"
)

# What the trained model answers to each prompt (keys: the task prompt text).
EXTRACTION_TEMPLATE = {"invoice_number": "", "total": ""}
TARGETS = {
    "Text Recognition:": "Tiny OCR works.",
    "Formula Recognition:": "$$E = mc^2$$",
    "Table Recognition:": "| a | b |\n| --- | --- | --- | --- |",
    "请按下列JSON格式输出图中信息:\n"
    + json.dumps(EXTRACTION_TEMPLATE, ensure_ascii=False, indent=4): (
        '{"invoice_number": "A-42", "total": "3.50"}'
    ),
}
TRAIN_STEPS = 150
TRAIN_IMAGE_SIDES = [(28, 56), (56, 56), (84, 56), (56, 112), (84, 84), (112, 56)]

HIDDEN = 64  # text hidden size == vision out_hidden_size
HEADS = 2  # text head_dim 32; partial rotary 0.5 -> 8 rotary pairs = sum(mrope_section)


def _recipe() -> dict[str, Any]:
    return {"recipe": RECIPE_VERSION, "seed": SEED, "hidden": HIDDEN}


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def _build(folder: Path) -> None:
    from workers.engines.torch_compat import apply_torch_compat

    apply_torch_compat()  # transformers' image processors import torchvision
    import torch
    from transformers import (
        GenerationConfig,
        Glm46VImageProcessorPil,
        Glm46VProcessor,
        Glm46VVideoProcessor,
        GlmOcrConfig,
        GlmOcrForConditionalGeneration,
    )

    tokenizer = _train_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)

    config = GlmOcrConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": HIDDEN,
            "intermediate_size": 3 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": HEADS,
            "num_key_value_heads": 1,
            "head_dim": HIDDEN // HEADS,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": [2, 3, 3],
            },
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": HIDDEN,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "image_size": 336,
        },
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = GlmOcrForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    processor = Glm46VProcessor(
        image_processor=Glm46VImageProcessorPil(
            size={"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 1280},
            patch_size=14,
            temporal_patch_size=2,
            merge_size=2,
        ),
        tokenizer=tokenizer,
        video_processor=Glm46VVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    _train(model, processor, tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _train(model: Any, processor: Any, tokenizer: Any) -> None:
    """Teaches the model each TARGETS answer (then end-of-text), for images of any size."""
    import numpy as np
    import torch
    from PIL import Image

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    rng = np.random.default_rng(SEED)
    examples = []
    for prompt, answer in TARGETS.items():
        for height, width in TRAIN_IMAGE_SIDES:
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            text = (
                "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>"
                f"{prompt}<|assistant|>\n"
            )
            inputs = processor(text=[text], images=[Image.fromarray(pixels)], return_tensors="pt")
            target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
            target_ids = torch.tensor([target])
            prompt_len = inputs["input_ids"].shape[1]
            inputs["input_ids"] = torch.cat([inputs["input_ids"], target_ids], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if "mm_token_type_ids" in inputs:
                pad = torch.zeros_like(target_ids, dtype=inputs["mm_token_type_ids"].dtype)
                inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], pad], dim=1)
            labels = inputs["input_ids"].clone()
            labels[:, :prompt_len] = -100
            examples.append((dict(inputs), labels))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same floating-point sums on every machine
    try:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(TRAIN_STEPS):
            optimizer.zero_grad()
            loss = sum(model(**inputs, labels=labels).loss for inputs, labels in examples)
            loss.backward()
            optimizer.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)


def tiny_settings(model: Path, data_dir: Path, **overrides: Any) -> Any:
    """pagemill Settings for this model on a CPU: small images, short answers, eager mode."""
    from app.settings import Settings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "vllm_model": str(model),
        "max_tokens": 64,
        "min_pixels": 28 * 28 * 2,
        "max_pixels": 28 * 28 * 8,
        "vllm_max_model_len": 1024,
        "vllm_max_num_seqs": 64,
        "vllm_engine_args": {
            "enforce_eager": True,
            "distributed_executor_backend": "uni",
            "dtype": "float32",
        },
    }
    values.update(overrides)
    return Settings(**values)


def build_tiny_glmocr(out_dir: Path) -> Path:
    """Builds (or reuses) the tiny model in `out_dir` and returns the folder."""
    return cached_build(out_dir, STAMP, _recipe(), _build)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.support.tiny_glmocr OUT", file=sys.stderr)
        return 2
    print(build_tiny_glmocr(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
