"""The kernelspec entry point of nbstep 0.1 (``--ext=nbstep.magic_autoload``).

Kernelspecs copied elsewhere by ``jupyter kernelspec install`` keep naming this
module; it loads :mod:`nbstep.notebook.autoload`, where the extension now lives.
"""

from __future__ import annotations

from nbstep.notebook.autoload import load_ipython_extension, unload_ipython_extension

__all__ = ["load_ipython_extension", "unload_ipython_extension"]
