"""Options of ``hydra/launcher=cerebras`` (the schema the Hydra plugin registers).

Kept free of heavy imports: Hydra imports the plugin, and with it this module, whenever it scans
for plugins, i.e. at the start of every ftlab command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: ``_target_`` of ftlab's Cerebras launcher plugin.
CEREBRAS_TARGET = "hydra_plugins.ftlab_cerebras_launcher.cerebras_launcher.CerebrasLauncher"

SPARSITY_ALGORITHMS = ("static", "gmp")


@dataclass
class CerebrasOptions:
    # The ModelZoo CLI; found on PATH after ``python_env`` is activated.
    executable: str = "cszoo"
    target_device: str = "CSX"
    # CS-X systems per job; null = each job's hardware.num_csx.
    num_csx: int | None = None
    # A virtual environment with the Cerebras ModelZoo: ``source <python_env>/bin/activate`` runs first.
    python_env: str | None = None
    # --mount_dirs / --python_paths: what the appliance's workers must see (data, code).
    mount_dirs: list[str] = field(default_factory=list)
    python_paths: list[str] = field(default_factory=list)
    # ModelZoo data: directories of pre-processed (HDF5) train / validation samples.
    data_processor: str = "GptHDF5MapDataProcessor"
    train_data_dir: str | None = None
    val_data_dir: str | None = None
    # (null train_data_dir: each job preprocesses its task's train/val examples with
    # ``cszoo data_preprocess run``, fine-tuning mode, into <job dir>/cszoo_data.)
    # The base model as a Cerebras checkpoint to start from; null = converted from
    # model.name_or_path (a local HF dir) with ``cszoo checkpoint convert`` into base_checkpoint_dir.
    checkpoint_path: str | None = None
    # Where converted bases go (one dir per model preset); null = <sweep dir>/cszoo_base.
    base_checkpoint_dir: str | None = None
    # Overrides of ftlab's HF -> ModelZoo parameter-name table (ftlab.launchers.cerebras_names):
    # {HF module (q_proj, or self_attn.q_proj): ModelZoo module path inside a decoder layer}, e.g.
    # hydra.launcher.module_names={q_proj: self_attn.proj_q_dense_layer}. null = the table.
    # Typed Any, not dict[str, str]: Hydra merges a command-line dict into a typed dict node key by
    # key and refuses new keys under struct mode (issue 12 row 8); check_supported checks the type.
    module_names: Any = None
    # Base-weight sparsity: static (one mask from the start, as ftlab) or gmp (gradual magnitude
    # pruning from 0 to sparsity.level, mask updated every sparsity_update_freq steps).
    sparsity_algorithm: str = "static"
    sparsity_update_freq: int = 100
    # Extra arguments appended to ``cszoo fit`` (e.g. [--compile_only]).
    extra_args: list[str] = field(default_factory=list)
    # Write each job's params YAML and command script, run nothing.
    dry_run: bool = False
