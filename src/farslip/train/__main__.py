"""``python -m farslip.train`` / ``torchrun -m farslip.train``: the trainer's entry point."""
import sys

from .main import main

sys.exit(main())
