"""Hyper-parameter search on the stage tree (``hydra/sweeper=stage_search``).

Successive halving with its rungs at stage boundaries: rung ``k`` trains every still-alive trial
truncated to its first ``k`` stages, each distinct prefix once, reads the metric at the end of
stage ``k``, and promotes the best ``1/eta`` of the trials. Because a stage's cache key depends
only on its prefix (:mod:`ftlab.reuse.steps`), the rung-``k`` jobs publish exactly the entries the
longer trials of rung ``k+1`` resume from.

The pure parts live here (:mod:`.halving` the math, :mod:`.space` the trials and their truncation,
:mod:`.state` the resumable decisions, :mod:`.records` the logs and the tree); the Hydra plugin in
``hydra_plugins.ftlab_stage_search_sweeper`` only composes configs and calls the launcher.
"""
