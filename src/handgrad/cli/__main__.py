"""``python -m handgrad.cli``: the command line."""

import sys

from handgrad.cli.main import main

sys.exit(main())
