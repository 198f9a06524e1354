"""Compute reuse: the plan of steps of a run, and their execution through the artifact store.

:mod:`ftlab.reuse.steps` turns the run config into its steps and their keys (the allow-lists);
:mod:`ftlab.reuse.runner` looks each up in the store (:mod:`ftlab.artifacts`), else builds it
under its lock; :mod:`ftlab.reuse.stages` and :mod:`ftlab.reuse.cached` are the Lightning and
model glue of the cached training stages, base and mask.
"""
