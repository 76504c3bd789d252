"""Zero-shot evaluation of any open_clip-style model on the paper's three tables (SPEC section 6).

    import farslip
    from farslip.eval import evaluate_classification, evaluate_retrieval, evaluate_segmentation, write_report
    model = farslip.create_model("FarSLIP1-ViT-B-32")          # created once, reused for every set
    tokenizer = farslip.get_tokenizer(model)                     # 248 tokens for Long-CLIP models
    results = {"classification": evaluate_classification(model, tokenizer, "/data/benchmarks"),
               "segmentation": evaluate_segmentation(model, tokenizer, "/data/ovss", ["LoveDA"])}
    write_report(results, "eval_results/FarSLIP1-ViT-B-32")

The command line is ``farslip eval classification|retrieval|segmentation|all|report`` (:mod:`.cli`,
also ``python -m farslip.eval ...``); the benchmark registry, the one place that says where each
data set lives, is :mod:`.registry`.
"""
from .classification import evaluate_classification
from .registry import CLASSIFICATION, RETRIEVAL, SEGMENTATION
from .report import write_report
from .retrieval import evaluate_retrieval
from .runner import DatasetFailed
from .segmentation import evaluate_segmentation

__all__ = ["CLASSIFICATION", "DatasetFailed", "RETRIEVAL", "SEGMENTATION", "evaluate_classification",
           "evaluate_retrieval", "evaluate_segmentation", "write_report"]
