"""The FarSLIP model library: checkpoints, dense tokens, region features, Long-CLIP text."""
from .checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint, load_state_dict
from .dense import LAST_ATTN_TYPES, dense_block, encode_dense
from .factory import create_model, create_model_and_transforms, get_tokenizer
from .hub import CheckpointNotAvailable, download
from .longclip import FrozenRows, enable_long_text, stretch_positional_embedding
from .registry import REGISTRY, PretrainedSpec, get_spec
from .roi import roi_features
from .text import encode_text

__all__ = [
    "CheckpointError", "CheckpointNotAvailable", "FrozenRows", "LAST_ATTN_TYPES", "PretrainedSpec",
    "REGISTRY", "UnsafeCheckpointError", "create_model", "create_model_and_transforms", "dense_block",
    "download", "enable_long_text", "encode_dense", "encode_text", "get_spec", "get_tokenizer", "load_checkpoint",
    "load_state_dict", "roi_features", "stretch_positional_embedding",
]
