"""``hydra.sweeper.search``: the options of a stage search, checked before anything runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import OmegaConf

from ftlab.core.errors import ConfigError
from ftlab.search.halving import MODES


@dataclass
class SearchOptions:
    eta: int = 3  # keep the best 1/eta of the trials at every stage boundary (1: keep all = exhaustive)
    metric: str = "val_loss"  # a metrics.json key: val_loss, or the task metric (eval_exact_match, ...)
    mode: str = "min"  # min | max
    max_trials: int | None = None  # search a seeded sample of this many trials of the grid
    seed: int = 0  # seed of that sample

    def check(self) -> SearchOptions:
        key = "hydra.sweeper.search"
        if not isinstance(self.eta, int) or self.eta < 1:
            raise ConfigError(f"{key}.eta", self.eta, "an integer >= 1 (1: no pruning, every prefix evaluated)")
        if self.mode not in MODES:
            raise ConfigError(f"{key}.mode", self.mode, f"one of {list(MODES)}")
        if not self.metric:
            raise ConfigError(f"{key}.metric", self.metric, "a metrics.json key such as val_loss or eval_exact_match")
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError(f"{key}.max_trials", self.max_trials, "null or an integer >= 1")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_options(node: Any) -> SearchOptions:
    """From the (possibly DictConfig) ``hydra.sweeper.search`` node; unknown keys are refused."""
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    allowed = set(SearchOptions.__dataclass_fields__)
    for k in data:
        if k not in allowed:
            raise ConfigError(f"hydra.sweeper.search.{k}", data[k], f"a key of {sorted(allowed)}")
    return SearchOptions(**data).check()
