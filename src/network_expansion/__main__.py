"""`python -m network_expansion`: the `network-expansion` command."""

import sys

from .cli import main

sys.exit(main())
