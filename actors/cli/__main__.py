"""`python -m actors.cli`: the `doctune` command without the console script."""

import sys

from actors.cli import main

sys.exit(main())
