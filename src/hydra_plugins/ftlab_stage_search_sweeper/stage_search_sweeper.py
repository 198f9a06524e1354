"""``hydra/sweeper=stage_search``: successive halving with rungs at stage boundaries.

The search space is Hydra's sweep syntax (``hydra.sweeper.params`` and the command line, as for
the basic sweeper) over per-stage keys (``schedule.stages.1.lr=1e-5,3e-5``) and trial-level keys.
At rung ``k`` the sweeper launches one job per distinct still-alive prefix, truncated to ``k``
stages, through whatever Hydra launcher is configured (basic, SLURM, ...): the jobs publish their
stages into the reuse cache, so rung ``k+1`` resumes from them and concurrent jobs share prefixes
through the cache's locks. The loop itself is :func:`ftlab.search.engine.run_search`; this class
only expands the sweep, composes configs and calls the launcher.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module without
# registering it in sys.modules, where dataclasses would look string annotations up.
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from ftlab.core.errors import FtlabError, report_error
from ftlab.search.options import SearchOptions, search_options

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.ftlab_stage_search_sweeper.stage_search_sweeper.StageSearchSweeper"


@dataclass
class StageSearchSweeperConf:
    _target_: str = TARGET
    params: dict[str, str] | None = None  # the search space, as the basic sweeper's params
    search: SearchOptions = field(default_factory=SearchOptions)


ConfigStore.instance().store(group="hydra/sweeper", name="stage_search", node=StageSearchSweeperConf,
                             provider="ftlab")


class StageSearchSweeper(Sweeper):
    def __init__(self, params: dict[str, str] | None = None, search: Any = None) -> None:
        self.params = dict(params or {})
        self.search_node = search  # checked in sweep(), where a bad value is reported in one line
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list) -> Any:
        # Imported here, not at the top: Hydra imports every plugin module whenever it starts
        # (each compose, --info, the preflight), and the engine pulls in lightning via ftlab.reuse.
        from ftlab.search.engine import report, run_search

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            opts = search_options(self.search_node)
            result = run_search(self._grid(arguments), opts, sweep_dir, self._compose, self._launch)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        except FtlabError as err:
            sys.exit(report_error(err))
        print(report(result, sweep_dir, opts.metric))
        return result.returns

    def _grid(self, arguments: list) -> list:
        """Every trial's overrides: the basic sweeper's cartesian product, in its order."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        return [list(t) for t in batch]

    def _compose(self, overrides: list) -> dict:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return OmegaConf.to_container(cfg, resolve=True)

    def _launch(self, batch: list, first: int) -> list:
        results = self.launcher.launch(batch, initial_job_idx=first)
        for r in results:
            _ = r.return_value  # re-raises a failed job's error
        return list(results)
