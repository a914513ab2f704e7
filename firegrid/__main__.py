"""`python -m firegrid ...` is the `firegrid` command."""

import sys

from firegrid.cli import main

sys.exit(main())
