"""Mask files: round trips, the sidecar, and refusals that name the parameter."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.check import check_targets, validate_weights
from ftlab.sparsity.compute import compute_masks, spec_of
from ftlab.sparsity.io import load_masks, save_masks, sidecar_path
from ftlab.sparsity.pipeline import load_checked_masks
from ftlab.sparsity.stats import describe, plot_histogram, write_layer_table


@pytest.fixture(scope="module")
def made():
    """(model, masks, sidecar) of a 50 % magnitude mask of the tiny Llama."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = compose_run(["sparsity=unstructured", "sparsity.level=0.5"])
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    masks = compute_masks(cfg, model, tok)
    meta = describe(masks, model=cfg.model.name, method="unstructured", importance="magnitude", target=0.5,
                    spec=spec_of(cfg.sparsity))
    yield model, masks, meta
    torch.set_num_threads(before)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_with_sidecar(tmp_path, made, suffix):
    model, masks, meta = made
    path = save_masks(masks, tmp_path / f"mask{suffix}", meta)
    loaded, side = load_masks(path)
    assert set(loaded) == set(masks) and all(torch.equal(loaded[n], masks[n]) for n in masks)
    assert all(m.dtype == torch.bool for m in loaded.values())
    assert side["model"] == "tiny_llama" and side["method"] == "unstructured" and side["level"] == 0.5
    assert side["importance"] == "magnitude"
    assert side["layers"]["model.layers.0.mlp.up_proj.weight"]["sparsity"] == 0.5
    assert sidecar_path(path) == tmp_path / "mask.json"
    assert sorted(os.listdir(tmp_path)) == ["mask.json", f"mask{suffix}"]  # no temporaries left
    got, _ = load_checked_masks(str(path), model, "tiny_llama")
    assert set(got) == set(masks)


def _resave(tmp_path, masks, meta, name="bad.safetensors"):
    return str(save_masks(masks, tmp_path / name, meta))


def test_wrong_shape_names_parameter(tmp_path, made):
    model, masks, meta = made
    bad = dict(masks)
    bad["model.layers.1.self_attn.k_proj.weight"] = torch.ones(3, 5, dtype=torch.bool)
    path = _resave(tmp_path, bad, {**meta, "layers": {}})
    with pytest.raises(ConfigError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight has shape \[3, 5\]"):
        load_checked_masks(path, model, "tiny_llama")


def test_non_boolean_names_parameter(tmp_path, made):
    model, masks, meta = made
    bad = {n: m.float() if n.endswith("layers.0.mlp.down_proj.weight") else m for n, m in masks.items()}
    path = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({n: m.contiguous() for n, m in bad.items()}, str(path))
    with pytest.raises(ConfigError, match=r"boolean masks; model\.layers\.0\.mlp\.down_proj\.weight has dtype float32"):
        load_checked_masks(str(path), model, "tiny_llama")


def test_mask_for_another_model(tmp_path, made):
    model, masks, meta = made
    other = compose_run(["model=tiny_llama", "model.config.num_hidden_layers=3"])
    tok = build_tokenizer(other.model)
    bigger = build_model(other.model, tok, seed=0)
    extra = compute_masks(compose_run(["sparsity=unstructured", "model.config.num_hidden_layers=3"]), bigger, tok)
    path = _resave(tmp_path, extra, {**meta, "layers": {}})
    with pytest.raises(ConfigError, match=r"'model\.layers\.2\.[a-z_.]+\.weight' is not one of its parameters"):
        load_checked_masks(path, model, "tiny_llama")
    # Same shapes, but the sidecar says the mask belongs to another model.
    path = _resave(tmp_path, masks, {**meta, "model": "tiny_mistral"}, "other.safetensors")
    with pytest.raises(ConfigError, match="computed for 'tiny_mistral'"):
        load_checked_masks(path, model, "tiny_llama")


class Payload:
    """An arbitrary object: unpickling it would run code chosen by the file's author."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pt_with_pickled_object_is_refused(tmp_path, made):
    _, masks, _ = made
    path = tmp_path / "evil.pt"
    torch.save({"model.layers.0.mlp.up_proj.weight": Payload()}, path)
    with pytest.raises(ConfigError, match="refused"):
        load_masks(path)
    path2 = tmp_path / "list.pt"
    torch.save([masks["model.layers.0.mlp.up_proj.weight"]], path2)  # loadable, but not a mapping
    with pytest.raises(ConfigError, match="mapping of parameter names"):
        load_masks(path2)


def test_targets_checked(made):
    _, masks, meta = made
    check_targets(masks, meta, "mask", "m")  # a correct mask passes
    with pytest.raises(ConfigError, match=r"within 0\.5 pp of 0\.7"):
        check_targets(masks, {**meta, "level": 0.7}, "mask", "m")
    nm_meta = {**meta, "method": "nm", "n": 2, "m": 4}
    with pytest.raises(ConfigError, match="exact 2:4 pattern"):
        check_targets(masks, nm_meta, "mask", "m")
    structured_meta = {**meta, "method": "structured"}
    with pytest.raises(ConfigError, match="partially pruned group"):
        check_targets(masks, structured_meta, "mask", "m")


def test_validate_weights_counts_leaks(made):
    _, masks, _ = made
    name = "model.layers.0.self_attn.q_proj.weight"
    weights = {n: torch.randn(m.shape).masked_fill(~m, 0) for n, m in masks.items()}
    ok = validate_weights(weights, masks)
    assert ok["passed"] and ok["leaks"] == 0 and ok["max_abs_where_pruned"] == 0.0
    assert ok["expected_sparsity"] == 0.5 and ok["achieved_sparsity"] == 0.5
    pruned = (~masks[name]).nonzero()[:3]
    for (i, j), v in zip(pruned.tolist(), (0.5, -2.0, 1e-8)):
        weights[name][i, j] = v
    bad = validate_weights(weights, masks)
    assert not bad["passed"] and bad["leaks"] == 3 and bad["max_abs_where_pruned"] == 2.0
    assert bad["layers"][name]["leaks"] == 3 and not bad["layers"][name]["passed"]
    assert all(v["passed"] for n, v in bad["layers"].items() if n != name)


def test_statistics_files(tmp_path, made):
    _, masks, _ = made
    csv_path = write_layer_table(masks, 0.5, tmp_path / "layers.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "layer,rows,cols,numel,pruned,sparsity,target"
    assert len(lines) == 1 + len(masks)
    assert lines[1].startswith("model.layers.0.self_attn.q_proj.weight,128,128,16384,8192,0.500000")
    png = plot_histogram(masks, 0.5, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sidecar_is_json_and_atomic_on_failure(tmp_path, made):
    _, masks, meta = made
    bad_meta = {**meta, "unserialisable": object()}
    with pytest.raises(TypeError):
        save_masks(masks, tmp_path / "m.safetensors", bad_meta)
    assert list(tmp_path.iterdir()) == []  # neither the mask nor a temporary survives
    path = save_masks(masks, tmp_path / "m.safetensors", meta)
    assert json.loads(sidecar_path(path).read_text())["format_version"] == 1
