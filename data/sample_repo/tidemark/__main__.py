"""Allow ``python -m tidemark``; equivalent to the ``tidemark`` console script."""

import sys

from .cli import main

sys.exit(main())
