"""Register the structured schemas with Hydra's ConfigStore (idempotent)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from ftlab.adapters.registry import all_adapters
from ftlab.config.schema import RunConfig

_done = False


def register_configs() -> None:
    """Store ``ftlab_schema`` (the run) and one ``adapter/_schema_<name>`` per registered adapter.

    Adapter option files start with ``defaults: [_schema_<name>, _self_]`` so that a key that
    belongs to another adapter (e.g. ``adapter.sparse_lambda`` with ``adapter=lora``) is rejected.
    """
    global _done
    if _done:
        return

    cs = ConfigStore.instance()
    cs.store(name="ftlab_schema", node=RunConfig)
    for spec in all_adapters():
        cs.store(group="adapter", name=f"_schema_{spec.name}", node=spec.config_cls)
    _done = True
