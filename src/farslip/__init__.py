"""farslip: FarSLIP (CLIP adaptation for fine-grained remote sensing) on top of open_clip.

    import farslip
    model, preprocess_train, preprocess_val = farslip.create_model_and_transforms("FarSLIP2-ViT-B-16")
    tokenizer = farslip.get_tokenizer(model)
    cls, tokens = farslip.encode_dense(model, images, last_attn="segearth")
    text = farslip.encode_text(model, tokenizer(captions))   # == model.encode_text, padding skipped
    regions = farslip.roi_features(tokens, boxes, grid=model.visual.grid_size)
"""
from .models import (
    LAST_ATTN_TYPES,
    REGISTRY,
    CheckpointError,
    CheckpointNotAvailable,
    FrozenRows,
    UnsafeCheckpointError,
    create_model,
    create_model_and_transforms,
    download,
    enable_long_text,
    encode_dense,
    encode_text,
    get_tokenizer,
    load_checkpoint,
    roi_features,
    stretch_positional_embedding,
)
from .version import __version__

__all__ = [
    "CheckpointError", "CheckpointNotAvailable", "FrozenRows", "LAST_ATTN_TYPES", "REGISTRY",
    "UnsafeCheckpointError", "__version__", "create_model", "create_model_and_transforms", "download",
    "enable_long_text", "encode_dense", "encode_text", "get_tokenizer", "load_checkpoint", "roi_features",
    "stretch_positional_embedding",
]
