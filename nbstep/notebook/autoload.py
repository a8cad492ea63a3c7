"""Load nbstep into a kernel without ``%load_ext``: the ``Python 3 (nbstep)`` kernel.

The kernelspec that ``pip install nbstep`` puts in
``{sys.prefix}/share/jupyter/kernels/python3-nbstep/kernel.json`` starts ipykernel
with ``--ext=nbstep.notebook.autoload``, and IPython then calls
:func:`load_ipython_extension` below while the kernel starts.

Why a kernelspec of its own, not an IPython config file: IPython reads only
``ipython_config.{py,json}`` and ``ipython_kernel_config.{py,json}`` from
``{sys.prefix}/etc/ipython`` (no ``*.d`` folder), so a package that ships one of
those files overwrites the user's or another package's, and uninstalling it deletes
theirs. A kernelspec directory has a name of its own, and leaves the standard
``python3`` kernel exactly as it was.

Turn it off with ``NBSTEP_AUTOLOAD=0`` in the kernel's environment (or pick the
standard kernel). An explicit ``%load_ext nbstep`` is not affected by the variable.
"""

from __future__ import annotations

import os
from typing import Any

OFF = ("0", "false", "no", "off")


def autoload_enabled() -> bool:
    return os.environ.get("NBSTEP_AUTOLOAD", "1").strip().lower() not in OFF


def load_ipython_extension(ip: Any) -> None:
    if not autoload_enabled():
        return
    # Through the extension manager, so the extension is known as "nbstep":
    # `%unload_ext nbstep` and `%reload_ext nbstep` then work as after `%load_ext nbstep`.
    ip.extension_manager.load_extension("nbstep")


def unload_ipython_extension(ip: Any) -> None:
    ip.extension_manager.unload_extension("nbstep")
