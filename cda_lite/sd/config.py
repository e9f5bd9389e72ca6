"""Training configuration of the SD rung as a file: ``python -m cda_lite.sd train --config run.yaml
[--set key=value ...] --out DIR``.

A configuration is an :class:`cda_lite.sd.presets.AlignPreset` (every field reachable) plus the
run options of :class:`TrainConfig`, parsed by OmegaConf (a maintained YAML/JSON parser whose
*structured* configs type-check every value against the dataclass and name the offending key). A file
may start from a preset (``preset: fig3``, ``tiny: true``) and override any field::

    preset: fig3
    tiny: true
    steps: 3
    prompts: my_prompts.txt          # one prompt per line: training *and* evaluation prompts
    constraints:
      - {reward: "mypkg.scores:sharpness", direction: ">=", level: 0.2, units: raw}
      - {reward: saturation, direction: "<=", level: -0.5}   # units: auto = σ (Table 7 has it)

``--set constraints[0].level=0.7`` edits one entry; ``DIR/config.yaml`` (written by every run) is the
resolved configuration and loads back to the same run. A reward is a name of
:func:`cda_lite.sd.registry.get_reward`, a ``module:function`` path, or (Python API) the callable itself:
images in [0, 1], (N, 3, H, W) → (N,); a function with a second parameter also receives the prompts.
"""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field, fields
from typing import List, Optional

from cda_lite.sd.presets import AlignPreset, ConstraintSpec, derived, get_preset, names

UNITS = ("auto", "raw", "sigma")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig(AlignPreset):
    """An :class:`AlignPreset` plus what a run needs beyond Algorithm 1's settings."""

    preset: Optional[str] = None  # the preset this configuration starts from (None: everything given)
    prompts: Optional[str] = None  # file, one prompt per line: both training and evaluation prompts
    train_prompts_file: Optional[str] = None  # file of training prompts (overrides ``prompts``)
    eval_prompts_file: Optional[str] = None  # file of evaluation prompts (overrides ``prompts``)
    model_path: Optional[str] = None  # diffusers folder, hub id or single .safetensors/.ckpt (else $CDA_SD_PATH)
    model_config: Optional[str] = None  # single-file checkpoints: diffusers folder or hub id of the configs (offline)
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16": frozen base in half, LoRA and optimiser in fp32
    validate_every: int = 0  # optimiser steps between validation grids (0: only at the end)
    validation_prompts: Optional[List[str]] = None  # None: the first 4 evaluation prompts
    validation_seeds: List[int] = field(default_factory=lambda: [0, 1])  # one grid column per seed
    tensorboard: bool = True  # TensorBoard event files in DIR/tensorboard (accelerate's tracker)
    resume: bool = True  # continue from DIR/checkpoint.pt when it exists


def _fail(msg: str):
    raise ValueError(msg)


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of ``path`` (stripped); ValueError when there are none."""
    if not os.path.isfile(path):
        _fail(f"prompts: no such file {path!r}")
    with open(path, encoding="utf8") as f:
        lines = [s.strip() for s in f]
    out = [s for s in lines if s]
    if not out:
        _fail(f"prompts: {path!r} has no prompt (one per line)")
    return out


def _base(preset: str | None, tiny: bool) -> TrainConfig:
    if preset is None:
        return TrainConfig("custom", [], tiny=bool(tiny))
    if preset not in names():
        _fail(f"preset: unknown {preset!r}; known: {names()}")
    p = get_preset(preset, tiny=bool(tiny))
    if not isinstance(p, AlignPreset):
        _fail(f"preset: {preset!r} is not a training (alignment) preset; training presets: "
              f"{[n for n in names() if isinstance(get_preset(n), AlignPreset)]}")
    return TrainConfig(**{f.name: getattr(p, f.name) for f in fields(AlignPreset)}, preset=preset)


def _value(text: str):
    """A ``--set`` value parsed by OmegaConf's own grammar (numbers, booleans, null, [lists], {dicts})."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
    except Exception:  # not YAML (e.g. ">="): the text itself
        return text


def load_config(path: str | None = None, preset: str | None = None, tiny: bool | None = None,
                overrides: list[str] | tuple = (), flags: dict | None = None) -> TrainConfig:
    """Resolve a configuration: the preset (from the file's ``preset``/``tiny`` or the arguments), then
    the file (YAML or JSON), then ``flags`` ({key: typed value}, the command line's own options), then
    ``overrides`` (``key=value``, ``a[0].b=value``). ValueError naming the key for anything unknown or
    mistyped."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    data = {}
    if path is not None:
        if not os.path.isfile(path):
            _fail(f"config: no such file {path!r}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # yaml.YAMLError and friends
            _fail(f"config: cannot parse {path!r}: {e}")
        if not OmegaConf.is_dict(loaded):
            _fail(f"config: {path!r} must hold a mapping of field: value")
        data = OmegaConf.to_container(loaded)
    sets = list((flags or {}).items())
    for kv in overrides:
        if "=" not in kv:
            _fail(f"--set: expected key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        sets.append((k.strip(), _value(v)))
    preset = data.get("preset", preset) if preset is None else preset
    tiny = data.get("tiny", False) if tiny is None else tiny
    for k, v in sets:  # --set preset=... / tiny=... choose the starting point too
        preset = v if k == "preset" else preset
        tiny = v if k == "tiny" else tiny
    schema = OmegaConf.structured(_base(preset, tiny))
    try:
        cfg = OmegaConf.merge(schema, data)
        for k, v in sets:
            OmegaConf.update(cfg, k, v, merge=True)
        out = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        _fail(f"config{': ' + key if key else ''}: {str(e).splitlines()[0]}")
    return finalize(out)


def finalize(c: TrainConfig) -> TrainConfig:
    """Constraints as :class:`ConstraintSpec`, prompt files read, every field checked."""
    cons = []
    for i, s in enumerate(c.constraints):
        if isinstance(s, dict):
            unknown = set(s) - {f.name for f in fields(ConstraintSpec)}
            if unknown:
                _fail(f"constraints[{i}]: unknown keys {sorted(unknown)}; known: reward, direction, level, units")
            s = ConstraintSpec(**s)
        check_spec(s, f"constraints[{i}]")
        resolve_reward(s.reward)  # an unknown name or an unimportable path fails here, before any work
        cons.append(s)
    if not cons:
        _fail("constraints: at least one constraint is needed (or start from a preset)")
    c.constraints = cons
    if c.prompts is not None:
        c.train_prompts = c.eval_prompts = read_prompts(c.prompts)
    if c.train_prompts_file is not None:
        c.train_prompts = read_prompts(c.train_prompts_file)
    if c.eval_prompts_file is not None:
        c.eval_prompts = read_prompts(c.eval_prompts_file)
    for k in ("train_prompts", "eval_prompts"):
        v = getattr(c, k)
        if not v or not all(isinstance(s, str) and s for s in v):
            _fail(f"{k}: need a non-empty list of non-empty strings")
    if c.mixed_precision not in MIXED_PRECISION:
        _fail(f"mixed_precision: must be one of {MIXED_PRECISION}, got {c.mixed_precision!r}")
    for k in ("steps", "images_per_step", "micro_batch", "lora_rank", "sample_steps"):
        if int(getattr(c, k)) < 1:
            _fail(f"{k}: must be >= 1, got {getattr(c, k)}")
    if c.validate_every < 0:
        _fail(f"validate_every: must be >= 0, got {c.validate_every}")
    if not c.validation_seeds:
        _fail("validation_seeds: need at least one seed")
    derived(c)
    return c


def check_spec(s: ConstraintSpec, where: str = "constraint") -> None:
    if s.direction not in (">=", "<="):
        _fail(f"{where}.direction: must be '>=' or '<=', got {s.direction!r}")
    if getattr(s, "units", "auto") not in UNITS:
        _fail(f"{where}.units: must be one of {UNITS}, got {s.units!r}")
    if not (callable(s.reward) or isinstance(s.reward, str) and s.reward):
        _fail(f"{where}.reward: a reward name, a 'module:function' path or a callable, got {s.reward!r}")


def reward_name(reward) -> str:
    """A printable name: the string itself, or ``module:qualname`` of a callable."""
    if isinstance(reward, str):
        return reward
    mod, qual = getattr(reward, "__module__", None), getattr(reward, "__qualname__", None)
    return f"{mod}:{qual}" if mod and qual else type(reward).__name__


class CallableReward:
    """A user's reward ``fn(images) -> (N,)`` (or ``fn(images, prompts)``) in the rung's interface
    ``r(images, prompts=None)``; checks the shape of what it returns."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name
        try:
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        except (TypeError, ValueError):
            params = [None]
        self.needs_prompts = len(params) >= 2

    def __call__(self, images, prompts=None):
        import torch

        r = self.fn(images, prompts) if self.needs_prompts else self.fn(images)
        r = torch.as_tensor(r, device=images.device) if not isinstance(r, torch.Tensor) else r
        if r.shape != (images.shape[0],):
            raise ValueError(f"reward {self.name!r}: must return shape ({images.shape[0]},) for "
                             f"{images.shape[0]} images, got {tuple(r.shape)}")
        return r


def resolve_reward(reward):
    """The reward as ``r(images, prompts=None) -> (N,)``: a known name (:func:`cda_lite.sd.registry.get_reward`),
    a ``module:function`` path, or a callable."""
    from cda_lite.sd.registry import get_reward, known

    if callable(reward):
        return CallableReward(reward, reward_name(reward))
    if not isinstance(reward, str):
        _fail(f"reward: a name, 'module:function' or a callable, got {type(reward).__name__}")
    if ":" in reward:
        mod, _, attr = reward.partition(":")
        try:
            fn = importlib.import_module(mod)
            for part in attr.split("."):
                fn = getattr(fn, part)
        except (ImportError, AttributeError) as e:
            _fail(f"reward {reward!r}: cannot import ({type(e).__name__}: {e}); the module must be importable "
                  f"(on PYTHONPATH)")
        if not callable(fn):
            _fail(f"reward {reward!r}: {attr} is not callable")
        return CallableReward(fn, reward)
    if reward not in known():
        _fail(f"unknown reward {reward!r}; known: {known()}, or a 'module:function' path")
    return get_reward(reward)


def to_yaml(c: AlignPreset) -> str:
    """The resolved configuration as YAML (callable rewards written as ``module:qualname``)."""
    from dataclasses import asdict, replace

    from omegaconf import OmegaConf

    if not isinstance(c, TrainConfig):
        c = TrainConfig(**{f.name: getattr(c, f.name) for f in fields(AlignPreset)})
    c = replace(c, constraints=[replace(s, reward=reward_name(s.reward)) for s in c.constraints])
    d = asdict(c)
    return OmegaConf.to_yaml(OmegaConf.create(d))


def save_config(c: AlignPreset, out: str) -> str:
    """Write ``out/config.yaml`` atomically; returns its path."""
    from cda_lite.sd.files import atomic_write_text

    path = os.path.join(out, "config.yaml")
    atomic_write_text(to_yaml(c), path)
    return path
