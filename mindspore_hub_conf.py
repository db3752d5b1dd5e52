"""The file name the MindSpore Hub client imports: an alias of the `hub_conf.py` beside it,
loaded by its path (a `hub_conf` module imported earlier, another hub model's, is not this one)."""

import hashlib
import importlib.util
import sys
from pathlib import Path

_HUB_CONF = Path(__file__).resolve().parent / "hub_conf.py"
_NAME = "_network_expansion_hub_conf_" + hashlib.sha256(str(_HUB_CONF).encode()).hexdigest()[:12]

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _HUB_CONF)
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])

create_network = sys.modules[_NAME].create_network
__all__ = ["create_network"]
