"""What every layer shares: the record of a step, names, and where code runs.

Nothing here imports a third-party library or another nbstep layer but ``errors``.
"""
