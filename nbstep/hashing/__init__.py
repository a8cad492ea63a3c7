"""Hashing what a step depends on: values (the structural key), code, and modules.

- :mod:`.recipe`: ``input_hash`` / ``structural_key`` / ``step_identity``, the seed's
  recipe plus nbstep's tags (the full table is its docstring);
- :mod:`.values` and :mod:`.arrays`: the encoders of Python's own values and of
  numpy / pandas ones;
- :mod:`.code`: functions and classes by their source or code, canonical ASTs;
- :mod:`.modules`: imported modules by version, project modules by file content.
"""

from __future__ import annotations

from .recipe import input_hash, step_identity, structural_key

__all__ = ["input_hash", "step_identity", "structural_key"]
