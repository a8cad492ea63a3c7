"""nbstep in a notebook: the ``%%step`` magic, cell analysis, capture and replay.

Only :mod:`.extension` and :mod:`.magics` import IPython; the rest reads a shell's
namespace and history through the shell object it is given.
"""
