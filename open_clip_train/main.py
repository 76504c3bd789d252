"""``-m open_clip_train.main`` from a checkout: FarSLIP's trainer, ``farslip.train.main``."""
import sys

from farslip.train.main import main

if __name__ == "__main__":
    sys.exit(main())
