"""The Cerebras adapter table (ftlab/launchers/cerebras_adapters.py): decided from the adapter specs'
general capability flags, it refuses exactly the adapters ModelZoo cannot train, in one line saying
why, and judges a newly registered family by its flags, not its name."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import compose
from ftlab.adapters import all_adapters, get_adapter
from ftlab.adapters.registry import AdapterSpec
from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_adapters import cerebras_adapters, cerebras_refusal, lora_on_cerebras
from ftlab.launchers.cerebras_options import CerebrasOptions
from ftlab.launchers.cerebras_params import check_supported

NAMES = sorted(a.name for a in all_adapters())
NEEDS = {"masked": ["sparsity=random", "sparsity.level=0.5"]}  # masked LoRA needs a sparse base


def test_the_table_reads_capabilities():
    assert AdapterSpec.__dataclass_fields__.keys().isdisjoint({"supports_cerebras", "cerebras_note"})
    assert cerebras_adapters() == ["full", "lora", "masked"]
    assert [n for n in NAMES if lora_on_cerebras(get_adapter(n))] == ["lora", "masked"]
    assert "magnitude" in cerebras_refusal(get_adapter("dora")) and "SDoRA's rank gates" in cerebras_refusal(
        get_adapter("sdora"))
    # a family registered later is judged by what it trains: a LoRA-shaped one passes, one with DoRA
    # magnitudes is refused, whatever its name
    lora_like = dataclasses.replace(get_adapter("lora"), name="my_lora")
    assert cerebras_refusal(lora_like) is None and lora_on_cerebras(lora_like)
    assert "magnitude" in cerebras_refusal(dataclasses.replace(get_adapter("lora"), name="x", magnitude=True))


@pytest.mark.parametrize("name", NAMES)
def test_cerebras_refuses_exactly_the_unsupported_adapters(name: str) -> None:
    cfg = compose(f"adapter={name}", *NEEDS.get(name, []), "task.num_examples=50", "hardware=cerebras")
    opts = CerebrasOptions()
    why = cerebras_refusal(get_adapter(name))
    if why is None:
        try:
            check_supported(cfg, opts, launching=False)
        except ConfigError as err:  # a later check (model, sparsity) may refuse; never the adapter
            assert err.key != "adapter"
        return
    with pytest.raises(ConfigError) as err:
        check_supported(cfg, opts, launching=False)
    assert err.value.key == "adapter" and str(err.value.allowed).startswith("one of ['full', 'lora', 'masked']")
    assert why in str(err.value) and len(str(err.value).splitlines()) == 1
