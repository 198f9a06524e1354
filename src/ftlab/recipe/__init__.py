"""A run, top to bottom: the recipe (``run.py``: config -> plan of steps -> steps executed or
fetched -> outputs), the lock that keeps two runs out of one run dir (``runlock.py``) and the
removal of a failed run's empty dir (``rundir.py``). Only the entry points and fused trials sit
above it."""
