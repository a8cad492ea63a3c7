"""The engine: ``step.run`` and friends over a :class:`~nbstep.storage.StepStore`.

No SQL and no DuckDB here: the engine asks the store for a slot's record, hashes
inputs, decides replay or compute, and appends what was computed.
"""
