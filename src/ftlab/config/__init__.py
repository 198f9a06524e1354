"""The ground floor of the config: the schemas (:mod:`~ftlab.config.schema`), the ``knob`` field
declarations (:mod:`~ftlab.config.fields`) and their range checks (:mod:`~ftlab.config.values`).

Every package reads these plain dataclasses, so nothing here imports another ftlab package but
:mod:`ftlab.core.errors`. Composition (Hydra), validation and the checks that read several packages live
at the top floor, in :mod:`ftlab.preflight`. Import the module you need: the package itself imports
nothing, so reading a schema (``ftlab.cache``, the planner's options) loads no validator.
"""
