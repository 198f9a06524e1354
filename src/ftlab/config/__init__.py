"""Config schemas (:mod:`~ftlab.config.schema`), ConfigStore registration (:mod:`~ftlab.config.store`),
composition (:mod:`~ftlab.config.compose`) and validation (:mod:`~ftlab.config.validate`).

Import the module you need: the package itself imports nothing, so reading a schema (``ftlab.cache``,
the planner's options) does not load the validators' torch and transformers.
"""
