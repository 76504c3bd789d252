"""FarSLIP's benchmarks, outside the installed library (as timm keeps its ``benchmark.py`` at the
root of the checkout): ``python scripts/bench.py train|eval|data|model|all``.

One module per part, each with its own ``main(argv)``: ``train`` (the training step, host syncs,
the teacher, the guard, AdamW; ``train resume`` runs :mod:`benchmarks.train_resume`), ``data``
(the loaders and their kernels), ``eval`` (the three evaluation tasks) and ``model`` (the dense
path). They time the library as installed or on ``PYTHONPATH``, so one copy of this folder
measures another checkout the same way (``docs/PERFORMANCE.md`` says how each number was taken).
"""
