"""MindSpore Hub entry point of NetworkExpansion: `create_network(name, *args, **kwargs)`.

Works both with the package installed and from a plain download of this folder (the hub
client imports this folder's `mindspore_hub_conf.py` by path): the `src/` next to this
file is put first on `sys.path`, so the code beside the card is the code that runs.
"""

import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from network_expansion.hub import create_network  # noqa: E402

__all__ = ["create_network"]
