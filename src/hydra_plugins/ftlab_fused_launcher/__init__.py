"""ftlab's Hydra launcher plugin for fused trials: ``--multirun hydra/launcher=fused``. Lives in
Hydra's ``hydra_plugins`` namespace package (there is deliberately no ``hydra_plugins/__init__.py``),
which is where Hydra discovers launchers.
"""
