"""``python -m farslip.eval TASK ...`` == ``farslip eval TASK ...`` (the one module entry point of the evaluation)."""
import sys

from .cli import main

sys.exit(main())
