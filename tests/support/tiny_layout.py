"""Builds a random-weight PP-DocLayout-V3 model folder, offline, for the layout tests and
the layout benchmark.

The folder is what `save_pretrained` writes for `PaddlePaddle/PP-DocLayoutV3_safetensors`
(config.json with the 25 labels, model.safetensors, preprocessor_config.json), so the
engine loads it exactly as it would load the real weights. Two sizes of the same
architecture (HGNetV2 backbone, hybrid encoder, mask-enhanced decoder, order head):

- `tiny` (~1.2 M parameters, 320 x 320 input, 30 queries): the tests, a pass in ~0.1 s;
- `default`: transformers' default config (~33 M parameters, 800 x 800, 300 queries), the
  real model's size, for the benchmark.

Random weights give random boxes. Weights are drawn wider than transformers' own init
(which leaves every query at the prior score and the same box), so scores and boxes vary
with the image and some pass the default threshold. Deterministic (fixed seed), cached:
a folder already built with the same recipe is reused.
CLI: `python -m tests.support.tiny_layout OUT [tiny|default]`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.support.model_cache import cached_build

RECIPE_VERSION = "1"
STAMP = "tiny_layout.json"
SEED = 1234
SIZES = ("tiny", "default")


def _recipe(size: str) -> dict[str, Any]:
    return {"recipe": RECIPE_VERSION, "seed": SEED, "size": size}


def _config(size: str) -> Any:
    from transformers import PPDocLayoutV3Config

    from workers.labels import LABELS

    values: dict[str, Any] = {
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "initializer_range": 0.2,
        "initializer_bias_prior_prob": 0.25,
    }
    if size == "tiny":
        backbone = PPDocLayoutV3Config().backbone_config.to_dict()
        backbone.update(
            stem_channels=[3, 16, 16],
            embedding_size=16,
            stage_in_channels=[16, 32, 64, 128],
            stage_mid_channels=[16, 16, 32, 64],
            stage_out_channels=[32, 64, 128, 256],
            hidden_sizes=[32, 64, 128, 256],
            stage_num_blocks=[1, 1, 1, 1],
            stage_numb_of_layers=[2, 2, 2, 2],
        )
        values.update(
            backbone_config=backbone,
            encoder_in_channels=[64, 128, 256],
            x4_feat_dim=32,
            d_model=64,
            encoder_hidden_dim=64,
            decoder_in_channels=[64, 64, 64],
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            decoder_layers=1,
            num_queries=30,
            num_denoising=0,
            global_pointer_head_size=32,
        )
    return PPDocLayoutV3Config(**values)


def _build(folder: Path, size: str) -> None:
    from workers.engines.torch_compat import apply_torch_compat

    apply_torch_compat()  # the image processor imports torchvision
    import torch
    from transformers import PPDocLayoutV3ForObjectDetection, PPDocLayoutV3ImageProcessor

    torch.manual_seed(SEED)
    model = PPDocLayoutV3ForObjectDetection(_config(size)).eval()
    side = 320 if size == "tiny" else 800
    processor = PPDocLayoutV3ImageProcessor(size={"height": side, "width": side})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_tiny_layout(out_dir: Path, size: str = "tiny") -> Path:
    """Builds (or reuses) the model in `out_dir` and returns the folder."""
    if size not in SIZES:
        raise ValueError(f"size is one of {SIZES}")
    return cached_build(out_dir, STAMP, _recipe(size), lambda folder: _build(folder, size))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m tests.support.tiny_layout OUT [tiny|default]", file=sys.stderr)
        return 2
    print(build_tiny_layout(Path(args[0]), *args[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
