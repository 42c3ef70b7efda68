"""``python -m bench ...`` = ``hbaf-edge bench ...``."""

import sys

from bench.cli import main

sys.exit(main())
