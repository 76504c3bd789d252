import sys

from farslip.cli import main

sys.exit(main())
