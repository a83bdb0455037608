"""`python -m loopkit ...`: the `loopkit` command where the console script is not on PATH (a venv
not activated, a cluster job that only knows the interpreter)."""

import sys

from .cli import main

sys.exit(main())
