"""Methods from outside ftlab: ``examples/plugin`` installed as a real distribution (entry points),
run through ``python -m ftlab``; the import-path and conf-store pieces on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hydra.core.config_store import ConfigStore
from safetensors.torch import load_file

from conftest import FAST, ROOT, cli
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.core.plugins import Registry, import_object, is_import_path, load_entry_points
from ftlab.preflight.store import store_options

PLUGIN = ROOT / "examples" / "plugin"


def test_import_path_resolves_or_fails_in_one_line():
    assert is_import_path("pkg.mod:NAME") and not is_import_path("magnitude")
    assert import_object("ftlab.core.plugins:GROUPS", "x")[:3] == ("ftlab.adapters", "ftlab.importance", "ftlab.tasks")
    assert import_object("ftlab.core.plugins:Registry.get", "x") is Registry.get  # dotted attributes
    with pytest.raises(ConfigError, match="sparsity.importance='ftlab.core.plugins:NOPE'"):
        import_object("ftlab.core.plugins:NOPE", "sparsity.importance")
    with pytest.raises(ValueError, match="unknown entry-point group"):
        load_entry_points("ftlab.nope")


@dataclass(frozen=True)
class _Spec:
    name: str
    weight: float = 1.0


#: what a researcher's module names by import path (``key=test_plugins:SPEC``)
SPEC = _Spec("anything", weight=2.0)
NOT_A_SPEC = 3


def test_registry_resolves_import_paths_only_where_it_accepts_them():
    paths = Registry("thing", "x.thing", _Spec, "ftlab.masks", import_paths=True, also=" (or none)")
    builtin = paths.register(_Spec("plain"))
    assert paths.get("plain") is builtin and paths.resolve("other") is None
    spec = paths.get("test_plugins:SPEC")  # registered under its path, its fields kept
    assert (spec.name, spec.weight) == ("test_plugins:SPEC", 2.0) and paths.resolve(spec.name) is spec
    assert spec in paths.all()
    with pytest.raises(ConfigError, match=r"^x.thing='other' is invalid: one of \['plain', 'test_plugins:SPEC'\] "
                                          r"\(or none\), or an import path module:_Spec$"):
        paths.get("other")
    with pytest.raises(ConfigError, match="x.thing='test_plugins:NOT_A_SPEC' is invalid: an import path whose "
                                          "object is a _Spec"):
        paths.get("test_plugins:NOT_A_SPEC")
    names_only = Registry("thing", "x.thing", _Spec, "ftlab.masks")
    assert names_only.resolve("test_plugins:SPEC") is None
    with pytest.raises(ConfigError, match=r"x.thing='test_plugins:SPEC' is invalid: one of \[\]$"):
        names_only.get("test_plugins:SPEC")


def test_plugin_yaml_options_are_stored_and_may_not_shadow_builtins(tmp_path):
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "h23_probe.yaml").write_text("name: h23_probe\n")
    assert store_options(ConfigStore.instance(), tmp_path) == ["task/h23_probe"]
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "lora.yaml").write_text("name: lora\n")
    with pytest.raises(FtlabError, match="adapter/lora.yaml .* shadows a built-in option"):
        store_options(ConfigStore.instance(), tmp_path)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """``examples/plugin`` pip-installed (a wheel built from its pyproject, entry points and all)
    into a fresh target dir that the CLI runs see on their path."""
    target = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-src")
    subprocess.run(["cp", "-r", str(PLUGIN), str(build)], check=True)  # keep build/ out of the checkout
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(build / "plugin")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (target / "ftlab_toy_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


@pytest.mark.slow
def test_plugin_adapter_score_and_task_run_and_the_score_setting_keys_the_mask(plugin_env, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", *FAST, "train.max_steps=4", "adapter=norm_tuning", "task=reverse",
               "sparsity=power", "sparsity.options.power=2,3", f"paths.cache_dir={tmp_path / 'cache'}",
               f"hydra.sweep.dir={sweep}", env=plugin_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((sweep / str(i) / "reuse_record.json").read_text()) for i in (0, 1)]
    assert records[0]["mask"]["key"] != records[1]["mask"]["key"]  # the score's own setting keys the mask
    for i in (0, 1):
        metrics = json.loads((sweep / str(i) / "metrics.json").read_text())
        assert "eval_exact_match" in metrics
        assert (sweep / str(i) / "mask.safetensors").is_file()
    assert "norm_tuning" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_plugin_mask_method_runs_and_its_setting_keys_the_mask(plugin_env, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("ftlab", "--multirun", *FAST, "train.max_steps=2", "sparsity=block", "sparsity.options.block=2,4",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", env=plugin_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((sweep / str(i) / "reuse_record.json").read_text()) for i in (0, 1)]
    assert records[0]["mask"]["key"] != records[1]["mask"]["key"]  # the method's own setting keys the mask
    for i, block in ((0, 2), (1, 4)):
        masks = load_file(str(sweep / str(i) / "mask.safetensors"))
        assert masks and json.loads((sweep / str(i) / "metrics.json").read_text())["sparsity_method"] == "block"
        for name, mask in masks.items():  # whole blocks of `block` input columns, half of them pruned
            blocks = mask.reshape(mask.shape[0], -1, block)
            assert bool((blocks.all(-1) | (~blocks).all(-1)).all()), name
            assert (~mask).float().mean().item() == 0.5, name
    bad = cli("ftlab", "sparsity=block", "sparsity.options.block=0", f"hydra.run.dir={tmp_path / 'run'}",
              env=plugin_env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("ftlab: error: sparsity.options.block=0 is invalid: an integer >= 1 "
                                  "(input columns per pruned block)")


@pytest.mark.slow
def test_plugin_settings_are_checked_in_one_line(plugin_env, tmp_path):
    proc = cli("ftlab", "adapter=norm_tuning", "task=reverse", "sparsity=power", "sparsity.options.power=-1",
               f"hydra.run.dir={tmp_path / 'run'}", env=plugin_env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ftlab: error: sparsity.options.power=-1 is invalid: a number > 0"
    assert not (tmp_path / "run").exists()
