"""Zero-shot evaluation of any open_clip-style model on the paper's three tables (SPEC section 6).

    import farslip
    from farslip.eval import evaluate_classification, evaluate_retrieval, evaluate_segmentation, write_report
    model = farslip.create_model("FarSLIP1-ViT-B-32")          # created once, reused for every set
    tokenizer = farslip.get_tokenizer(model)                     # 248 tokens for Long-CLIP models
    results = {"classification": evaluate_classification(model, tokenizer, "/data/benchmarks"),
               "segmentation": evaluate_segmentation(model, tokenizer, "/data/ovss", ["LoveDA"])}
    write_report(results, "eval_results/FarSLIP1-ViT-B-32")

The command line is ``farslip eval classification|retrieval|segmentation|all`` (:mod:`.cli`).
"""
import importlib

# Loaded on first use, so that ``python -m farslip.eval.segmentation`` (and the other task modules)
# does not import the module it is about to run as ``__main__``.
_EXPORTS = {
    "evaluate_classification": "classification", "evaluate_retrieval": "retrieval",
    "evaluate_segmentation": "segmentation", "write_report": "report", "DatasetFailed": "runner",
    "CLASSIFICATION": "registry", "RETRIEVAL": "registry", "SEGMENTATION": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
