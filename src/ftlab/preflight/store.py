"""Register the structured schemas with Hydra's ConfigStore (idempotent)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ftlab.adapters.registry import all_adapters
from ftlab.config.schema import RunConfig
from ftlab.core.errors import FtlabError
from ftlab.core.plugins import load_entry_points

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
    for _, package in load_entry_points("ftlab.conf"):
        store_options(cs, plugin_conf_dir(package))
    _done = True


def plugin_conf_dir(package) -> Path:
    """The directory of an ``ftlab.conf`` entry point's package (``<group>/<option>.yaml`` inside)."""
    return Path(str(files(package)))


def store_options(cs: ConfigStore, root: Path) -> list[str]:
    """Store every ``<group>/<option>.yaml`` under ``root`` as a config option of that group (so an
    installed package's ``adapter=toy`` composes like ``conf/adapter/lora.yaml``); a built-in
    option of the same name is kept and the package's refused in one line."""
    stored = []
    builtin = Path(__file__).resolve().parents[3] / "conf"
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group == ".":
            continue
        if (builtin / group / path.name).is_file():
            raise FtlabError(f"plugin option {group}/{path.name} in {root} shadows a built-in option; rename it")
        cs.store(group=group, name=path.stem, node=OmegaConf.load(path))
        stored.append(f"{group}/{path.stem}")
    return stored
