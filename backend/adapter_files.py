"""What a trained adapter's folder says about how to load it: the run record and the dtype names it uses.

`backend.train` writes the record beside the adapter's weights (the base model's folder and the resolved train
config); evaluation (`backend.generate`), merging and serving read it to load the same base in the same dtype.
Kept apart from the trainer so that loading an adapter does not import training.
"""

from __future__ import annotations

import torch

RUN_CONFIG_FILE = "doctune_train_config.json"
"""The run record in an adapter folder: {"train_config", "base_model_path", "global_step", "train_rows", ...}."""
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "auto": "auto"}
"""`model.dtype` names (`backend.train_config.DTYPES`) as torch dtypes; `auto` is left to transformers."""
