"""The file name the MindSpore Hub client imports: an alias of `hub_conf.py`."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from hub_conf import create_network  # noqa: E402

__all__ = ["create_network"]
