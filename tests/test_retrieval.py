"""The seed's zero-shot retrieval entry point, kept so its README command works from a checkout:

    python -m tests.test_retrieval --model-arch ViT-B-32 --model-name FarSLIP1 \
        --force-quick-gelu --pretrained checkpoints/FarSLIP1_ViT-B-32.pt [--use-long-clip] --data-root DIR

A thin wrapper over ``farslip eval retrieval`` (see farslip.eval.seed). It holds no pytest
tests; everything happens in ``main`` so that collecting it imports nothing heavy.
"""
import sys


def main(argv=None) -> int:
    from farslip.eval.seed import seed_main

    return seed_main("retrieval", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
