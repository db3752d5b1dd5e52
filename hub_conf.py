"""MindSpore Hub entry point of NetworkExpansion: `create_network(name, *args, **kwargs)`.

The hub client downloads this folder and imports `mindspore_hub_conf.py` (an alias of this
file) by path. The code that builds the network must then be the code beside this file, not
whatever else the process has imported: the package under `src/` here is loaded by its path.
If a `network_expansion` from elsewhere (an installed version, another download) was imported
first, this folder's copy is loaded beside it under a name of its own, and the log says so;
without a `src/` here (an installed copy of this file), the installed package is used.
"""

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent / "src" / "network_expansion"


def _package_beside_this_file():
    if not (_PACKAGE / "__init__.py").is_file():
        import network_expansion  # an installed copy of this file: the installed package

        return network_expansion
    loaded = sys.modules.get("network_expansion")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent == _PACKAGE:
        return loaded
    name = "network_expansion"
    if loaded is not None:  # another copy was imported first: this folder's, beside it
        name = "_network_expansion_" + hashlib.sha256(str(_PACKAGE).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        logging.getLogger("network_expansion").warning(
            "hub_conf: network_expansion was already imported from %s; the hub builds with the copy beside its card, "
            "%s", Path(loaded.__file__).parent, _PACKAGE)
    spec = importlib.util.spec_from_file_location(name, _PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(_PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_package = _package_beside_this_file()
create_network = _package.create_network
__all__ = ["create_network"]
