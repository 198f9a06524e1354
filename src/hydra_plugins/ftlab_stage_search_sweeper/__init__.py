"""ftlab's Hydra sweeper plugin: ``--multirun hydra/sweeper=stage_search`` (successive halving at
stage boundaries over cached prefixes). Lives in Hydra's ``hydra_plugins`` namespace package
(there is deliberately no ``hydra_plugins/__init__.py``), which is where Hydra discovers sweepers.
"""
