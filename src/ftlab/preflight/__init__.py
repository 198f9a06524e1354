"""The top floor: a run's config composed and checked before anything runs.

- :mod:`~ftlab.preflight.store`, :mod:`~ftlab.preflight.compose`: Hydra's ConfigStore, composition
  outside ``@hydra.main`` and sweep expansion;
- :mod:`~ftlab.preflight.validate`: every range and cross-group check, in order (each group's own
  checks live with the code that owns the group; this module calls them);
- :mod:`~ftlab.preflight.model_checks`, :mod:`~ftlab.preflight.environment`,
  :mod:`~ftlab.preflight.fsdp_rules`, :mod:`~ftlab.preflight.reuse_checks`: checks of the model
  directory, the machine, FSDP and the cache directory;
- :mod:`~ftlab.preflight.launch`: what ``python -m ftlab`` checks for every job of a sweep before
  Hydra launches any; :mod:`~ftlab.preflight.reference`: the generated config reference.

These modules read many packages (adapters, data, sparsity, training, launchers ...), so they sit
above all of them; no package below imports this one (``tests/test_layers.py``).
"""
