"""Bad sparsity input fails at composition with one line naming key, value and what is allowed,
for single runs and for every job of a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.io import save_masks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("overrides", "message"), [
    (["sparsity=unstructured", "sparsity.level=1.0"], "sparsity.level=1.0 is invalid: a number in [0, 1)"),
    (["sparsity=unstructured", "sparsity.level=-0.1"], "sparsity.level=-0.1 is invalid: a number in [0, 1)"),
    (["sparsity=unstructured", "sparsity.levels=[0.5,1.2]"], "sparsity.levels[1]=1.2 is invalid"),
    (["sparsity=nm", "sparsity.n=4", "sparsity.m=4"], "sparsity.n=4 is invalid: an integer in [1, sparsity.m=4)"),
    (["sparsity=nm", "sparsity.n=5", "sparsity.m=4"], "sparsity.n=5 is invalid"),
    (["sparsity=nm", "sparsity.n=1", "sparsity.m=3"], "sparsity.m=3 is invalid: a divisor of the input width"),
    (["sparsity=structured", "sparsity.structure=head"], "'model.layers.0.mlp.gate_proj' has no heads"),
    (["sparsity=unstructured", "sparsity.importance=fisher"], "sparsity.importance='fisher' is invalid: one of"),
    (["sparsity=unstructured", "sparsity.method=lottery"], "sparsity.method='lottery' is invalid: one of"),
    (["sparsity=unstructured", "sparsity.group=block"], "sparsity.group='block' is invalid"),
    (["sparsity=unstructured", "sparsity.mode=dense"], "sparsity.mode='dense' is invalid"),
    (["sparsity=unstructured", "sparsity.importance=wanda", "sparsity.group=global"],
     "sparsity.group='global' is invalid: 'row' or 'layer' with importance=wanda"),
    (["sparsity=structured", "sparsity.group=row"], "sparsity.group='row' is invalid: 'layer' for method=structured"),
    (["sparsity=unstructured", "sparsity.modules=[*.embed_tokens]"], "sparsity.modules="),
    (["sparsity=pruned"], "sparsity='pruned' is invalid: one of"),
    (["adapter=masked"], "adapter='masked' is invalid: a sparse base"),
    (["sparsity=unstructured", "sparsity.mask_path=/nonexistent/m.safetensors"], "an existing mask file"),
    (["sparsity=unstructured", "sparsity.mask_path=/tmp/m.npz"], "a .safetensors or .pt mask file"),
])
def test_bad_values_fail_at_composition(overrides, message):
    with pytest.raises(FtlabError) as err:
        compose_run(overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_good_values_compose():
    for overrides in (["sparsity=nm"], ["sparsity=structured", "sparsity.structure=head",
                                        "sparsity.modules=[*.self_attn.*]"],
                      ["sparsity=random", "sparsity.level=0.9"], ["adapter=masked", "sparsity=unstructured"],
                      ["sparsity=unstructured", "sparsity.importance=wanda", "sparsity.group=row"]):
        compose_run(overrides)


def test_mask_file_that_does_not_fit_fails_at_composition(tmp_path):
    """The header of a safetensors mask is checked against the model built on the meta device."""
    path = save_masks({"model.layers.0.self_attn.q_proj.weight": torch.ones(64, 128, dtype=torch.bool)},
                      tmp_path / "m.safetensors", {"model": "tiny_llama"})
    with pytest.raises(ConfigError, match=r"q_proj\.weight has shape \[64, 128\], the model's parameter has \[128, 128\]"):
        compose_run(["sparsity.mask_path=" + str(path)])
    ok = save_masks({"model.layers.0.self_attn.q_proj.weight": torch.ones(128, 128, dtype=torch.bool)},
                    tmp_path / "ok.safetensors", {"model": "tiny_llama"})
    compose_run(["sparsity.mask_path=" + str(ok)])
    with pytest.raises(ConfigError, match="computed for 'tiny_llama'"):
        compose_run(["sparsity.mask_path=" + str(ok), "model=tiny_mistral"])


def test_sweep_with_one_bad_level_launches_nothing(tmp_path, refused_in_process):
    """``python -m ftlab --multirun`` (its main, in this process): the bad job fails the whole sweep
    before any job runs."""
    sweep_dir = tmp_path / "sweep"
    code, _, stderr = refused_in_process("--multirun", "sparsity=unstructured", "sparsity.level=0.5,1.5",
                                         f"hydra.sweep.dir={sweep_dir}")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert lines == ["ftlab: error: sparsity.level=1.5 is invalid: a number in [0, 1)"]
    assert not sweep_dir.exists()
