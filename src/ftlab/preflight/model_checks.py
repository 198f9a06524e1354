"""Preflight checks of the ``model`` group: the architecture can be built and a local model dir holds
a model.

transformers only rejects an inconsistent architecture (``hidden_size`` not divisible by the
heads, an unknown ``arch``) when the model is built, minutes into a run and as a multi-line
traceback. Building it on the ``meta`` device costs no weights (tens of milliseconds even for the
8B presets), so the preflight does exactly that and reports the first problem as one line.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ftlab.adapters.targets import check_configured_targets
from ftlab.core.errors import ConfigError, fail
from ftlab.models.build import build_model, build_tokenizer, meta_model
from ftlab.models.dtypes import torch_dtype
from ftlab.models.quantization import check_kbit_coverage
from ftlab.models.vocab import check_vocabulary

TOKENIZERS = ("byte", "auto")
#: files a HF model directory holds its weights in (sharded ones have an index next to them)
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
#: (numerator, divisor) keys of model.config that transformers' attention needs to divide evenly
DIVISIBLE = (("hidden_size", "num_attention_heads"), ("num_attention_heads", "num_key_value_heads"))


def _last_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


#: sizes of model.config that must be positive integers (transformers accepts 0 and fails later)
POSITIVE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "head_dim", "num_local_experts", "num_experts_per_tok")


def check_divisible(model_cfg: Any) -> None:
    conf = model_cfg.config or {}
    for key in POSITIVE:
        v = conf.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            fail(f"model.config.{key}", v, "an integer >= 1")
    for num, div in DIVISIBLE:
        a, b = conf.get(num), conf.get(div)
        if isinstance(a, int) and isinstance(b, int) and b > 0 and a % b:
            fail(f"model.config.{num}", a, f"a multiple of model.config.{div}={b}")


@functools.lru_cache(maxsize=16)
def known_config_keys(model_type: str) -> tuple[str, frozenset[str]]:
    """(class name, keys) transformers' config class for ``model_type`` reads: its constructor's
    parameters, every attribute a default instance carries (the common ``PretrainedConfig`` ones
    included) and its attribute aliases. Any other key is stored and never read."""
    cls = CONFIG_MAPPING[model_type]
    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    keys |= set(cls().to_dict()) | set(getattr(cls, "attribute_map", {})) | modeling_reads(cls)
    return cls.__name__, frozenset(keys)


_READS = re.compile(r"""getattr\(\s*(?:self\.)?config\s*,\s*["'](\w+)["']|\bconfig\.(\w+)""")


def modeling_reads(cls: type) -> set[str]:
    """Attributes the architecture's modeling code reads from its config without the class
    declaring them (``getattr(config, "head_dim", hidden_size // heads)`` in Qwen3-MoE): read
    from the source text beside the config class, nothing imported."""
    out: set[str] = set()
    for f in Path(inspect.getfile(cls)).parent.glob("modeling_*.py"):
        out |= {a or b for a, b in _READS.findall(f.read_text(encoding="utf-8", errors="replace"))}
    return out


def check_config_keys(model_cfg: Any) -> None:
    """Every key under ``model.config`` is one transformers' config class knows (``+model.config.
    rope_thta=...`` would otherwise be accepted and ignored: the run trains another model)."""
    conf = model_cfg.config or {}
    model_type = model_cfg.arch
    path = model_cfg.name_or_path
    if path and Path(path).is_dir():
        return  # a local dir builds from its own config.json (ftlab.models.build): model.config is not read
    if model_type not in CONFIG_MAPPING:
        return
    name, known = known_config_keys(model_type)
    plain = OmegaConf.to_container(conf, resolve=True) if OmegaConf.is_config(conf) else dict(conf)
    for key, value in plain.items():
        if key not in known and not _changes_config(model_type, key, value):
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"did you mean model.config.{close[0]}?" if close else "see the class's documentation"
            fail(f"model.config.{key}", value, f"a key of transformers' {name} ({model_type}); {hint}")


def _changes_config(model_type: str, key: str, value: Any) -> bool:
    """Whether a key outside the class's own attributes is still read: a legacy keyword the class
    converts (``rope_theta`` into ``rope_parameters``) changes some other attribute."""
    cls = CONFIG_MAPPING[model_type]
    try:
        got = cls(**{key: value}).to_dict()
    except Exception:  # noqa: BLE001 - a value the class refuses: the meta-device build reports it
        return True
    got.pop(key, None)
    return got != cls().to_dict()


def check_model_dir(model_cfg: Any) -> None:
    """Preflight: ``name_or_path`` is a directory with a config, weights (and a tokenizer for
    ``tokenizer=auto``) that load here."""
    path = model_cfg.name_or_path
    if not path:
        return
    d = Path(path)
    if not d.is_dir():
        fail("model.name_or_path", path, "a local HF model directory (nothing is downloaded on this machine)")
    if not (d / "config.json").is_file():
        fail("model.name_or_path", path, "a HF model directory with config.json (save one with save_pretrained)")
    if not any(next(d.glob(p), None) for p in WEIGHT_PATTERNS):
        fail("model.name_or_path", path, f"a HF model directory with weights ({', '.join(WEIGHT_PATTERNS)})")
    _load_dir(str(d), model_cfg.tokenizer == "auto")
    check_causal_lm(d)
    check_dir_vocabulary(model_cfg)
    check_weight_shapes(d, meta_model(OmegaConf.to_yaml(model_cfg, resolve=True)))


def check_causal_lm(d: Path) -> None:
    """The directory's weights are of a causal-LM class transformers can build and ftlab can adapt
    (a BERT masked-LM dir would otherwise load as ``BertLMHeadModel`` and train, exit 0)."""
    try:
        info = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return  # _load_dir reported it
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    model_type = info.get("model_type")
    archs = info.get("architectures") or []
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        fail("model.name_or_path", str(d), f"a causal-LM model directory; config.json's model_type={model_type!r} "
             "has no causal-LM class in transformers")
    if archs and not any(a in causal for a in archs):
        fail("model.name_or_path", str(d), f"a causal-LM model directory; its weights are of {', '.join(archs)} "
             f"(config.json architectures), not a causal LM such as {MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]}")


def weight_shapes(d: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (file name, shape)}`` from the safetensors headers (no tensor is read)."""
    index = d / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
    else:
        files = sorted(p.name for p in d.glob("*.safetensors"))
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name in files:
        try:
            with safe_open(str(d / name), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                    shapes[key] = (name, tuple(fh.get_slice(key).get_shape()))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for a broken header
            raise ConfigError("model.name_or_path", str(d), f"readable safetensors weights ({name}: "
                              f"{_last_line(err)[:200]})") from err
    return shapes


def check_weight_shapes(d: Path, model: nn.Module | None) -> None:
    """Every tensor in the weight files has the shape ``config.json`` gives its parameter."""
    if model is None:
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = getattr(model, "base_model_prefix", "")
    for key, (file, shape) in weight_shapes(d).items():
        want = expected.get(key, expected.get(f"{prefix}.{key}"))
        if want is not None and want != shape:
            fail("model.name_or_path", str(d), f"weights whose shapes agree with config.json: {file} holds {key} "
                 f"as {list(shape)}, config.json gives {list(want)}")


def check_dir_vocabulary(model_cfg: Any) -> None:
    """Preflight: the directory's embedding rows (``config.json``'s ``vocab_size``) serve the
    configured tokenizer (``ftlab.models.vocab``), before any weight loads."""
    rows = getattr(AutoConfig.from_pretrained(model_cfg.name_or_path).get_text_config(), "vocab_size", None)
    if isinstance(rows, int):
        check_vocabulary(rows, len(build_tokenizer(model_cfg)), model_cfg)


@functools.lru_cache(maxsize=8)
def _load_dir(path: str, tokenizer: bool) -> None:
    """The config (and tokenizer) load: both are small files, unlike the weights."""
    try:
        AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a broken dir
        raise ConfigError("model.name_or_path", path, f"a HF model directory whose config.json loads "
                          f"({_last_line(err)[:200]})") from err
    if tokenizer:
        try:
            AutoTokenizer.from_pretrained(path)
        except Exception as err:  # noqa: BLE001
            raise ConfigError("model.tokenizer", "auto", f"a tokenizer in model.name_or_path={path} "
                              f"({_last_line(err)[:200]}); or model.tokenizer=byte") from err


@functools.lru_cache(maxsize=16)
def meta_architecture(model_yaml: str) -> nn.Module:
    """The architecture on the meta device (no weights); one :class:`ConfigError` line if
    transformers refuses it."""
    model_cfg = OmegaConf.create(model_yaml)
    tokenizer = build_tokenizer(model_cfg) if model_cfg.tokenizer == "byte" else None
    try:
        return build_model(model_cfg, tokenizer, device="meta")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - transformers' own validation, many exception types
        path = model_cfg.name_or_path
        if path and Path(path).is_dir():  # the meta-device build read this directory's config.json
            raise ConfigError("model.name_or_path", path, "a HF model directory whose config.json builds "
                              f"the model (transformers: {_last_line(err)[:200]})") from err
        raise ConfigError("model.config", f"{model_cfg.arch} config",
                          f"a consistent {model_cfg.arch} architecture (transformers: {_last_line(err)[:200]})") from err


def check_model(cfg: Any) -> None:
    """Validator (composition): dtype, tokenizer, arch, divisibility, then the meta-device build of
    ``model.config`` and the configured target lists against it (the adapters' own target rule,
    :func:`ftlab.adapters.targets.check_configured_targets`, so composition and build agree). Presets name hub ids in ``name_or_path`` for planning; whether that is a
    directory the run can load is :func:`check_model_dir`'s question, asked by the preflight."""
    m = cfg.model
    torch_dtype(m.dtype)
    if m.name_or_path and (Path(m.name_or_path) / "config.json").is_file():
        check_causal_lm(Path(m.name_or_path))  # before its model_type judges model.config's keys
    if m.tokenizer not in TOKENIZERS:
        fail("model.tokenizer", m.tokenizer, f"one of {list(TOKENIZERS)}")
    if m.tokenizer == "auto" and not m.name_or_path:
        fail("model.tokenizer", "auto", "'byte', or 'auto' with model.name_or_path set to a model directory")
    if not m.name_or_path or m.config:
        if m.arch not in CONFIG_MAPPING:
            fail("model.arch", m.arch, "a transformers model type such as 'llama', 'mistral', 'qwen2', 'mixtral'")
        check_config_keys(m)
        check_divisible(m)
        model = meta_architecture(OmegaConf.to_yaml(m, resolve=True))
    else:  # a model directory: its config.json gives the architecture, if it builds here
        model = meta_model(OmegaConf.to_yaml(m, resolve=True))
    if model is not None:
        check_configured_targets(model, cfg)
        check_kbit_coverage(model, m)
