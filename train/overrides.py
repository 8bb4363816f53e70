"""`train --set KEY=VALUE`: change any recipe setting, typed from the dataclass field it names.

One mechanism instead of a flag per setting. Keys are dotted paths into the ``Recipe``:

- ``stage2.lr=1e-4``: one stage (by name); a ``StageSpec`` field or a field of its ``TrainConfig``;
- ``image_share=0.2``: the same, on every stage (an objective that has no use for a field ignores it);
- ``stage0.lr_scale.vision_encoder=3``: one key of a dict field;
- ``model.vision.stem_channels=16,32``: the model's config (a ``VideoLlamaConfig`` path; recipes whose
  model is a preset name are changed with ``--preset``);
- ``world.n_train=500``: the synthetic world's sizes (typed as the recipe's own value);
- any other field of the ``Recipe`` itself (e.g. a dataclass section such as ``lora.rank=4``).

Values are parsed by the field's type: numbers, ``true``/``false``, ``none`` for optional
fields, comma-separated lists for tuples and lists (empty for none). Unknown keys and values of
the wrong type raise ``ValueError`` naming the key and what it takes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from model.config import VideoLlamaConfig

_TRUE, _FALSE, _NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


def apply_overrides(recipe: Any, items: list[str]) -> None:
    """Apply each ``KEY=VALUE`` of ``items`` to ``recipe`` in order, then check the result."""
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. stage2.lr=1e-4 or image_share=0.2")
        try:
            set_value(recipe, key, text.strip())
        except ValueError as err:
            raise ValueError(f"--set {item}: {err}") from None
    for spec in recipe.stages:
        spec.check()
    if isinstance(recipe.model, dict):
        VideoLlamaConfig.from_dict(recipe.model)  # a bad model setting is named here, not mid-run


def set_value(recipe: Any, key: str, text: str) -> None:
    head, _, rest = key.partition(".")
    stages = {spec.name: spec for spec in recipe.stages}
    if head == "model" and rest:
        if not isinstance(recipe.model, dict):
            raise ValueError(f"recipe {recipe.name} trains the preset {recipe.model!r}; choose another with --preset")
        _set_in_config(recipe.model, VideoLlamaConfig, rest, text)
    elif head == "world" and rest:
        if rest not in recipe.world:
            raise ValueError(f"unknown world setting {rest!r}; this recipe's are {', '.join(recipe.world) or 'none'}")
        recipe.world[rest] = parse(text, type(recipe.world[rest]), key)
    elif head in stages and rest:
        _set_in_stage(stages[head], rest, text)
    elif head in _field_names(recipe) and head not in ("name", "stages"):
        _set_in_dataclass(recipe, head, rest, text)
    else:
        for spec in recipe.stages:  # no stage named: every stage
            _set_in_stage(spec, key, text)


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _set_in_stage(spec: Any, path: str, text: str) -> None:
    name = path.partition(".")[0]
    fixed = ("name", "objective", "branches", "train")  # what a stage is, not how it trains
    own = [n for n in _field_names(spec) if n not in fixed]
    if name in own:
        _set_in_dataclass(spec, name, path.partition(".")[2], text)
    elif name in _field_names(spec.train):
        _set_in_dataclass(spec.train, name, path.partition(".")[2], text)
    else:
        raise ValueError(f"unknown setting {path!r}; a stage has {', '.join(own + _field_names(spec.train))} "
                         "(prefix a stage name, e.g. stage2.lr, or model., world.)")


def _set_in_dataclass(obj: Any, name: str, rest: str, text: str) -> None:
    hint = typing.get_type_hints(type(obj))[name]
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current) and rest:  # a nested section, e.g. lora.rank
        sub, _, deeper = rest.partition(".")
        if sub not in _field_names(current):
            raise ValueError(f"unknown setting {name}.{sub}; {name} has {', '.join(_field_names(current))}")
        _set_in_dataclass(current, sub, deeper, text)
    elif rest:
        if typing.get_origin(hint) is not dict:
            raise ValueError(f"{name} has no parts; write {name}=VALUE")
        value_type = typing.get_args(hint)[1]
        setattr(obj, name, {**current, rest: parse(text, value_type, f"{name}.{rest}")})
    else:
        setattr(obj, name, parse(text, hint, name))


def _set_in_config(data: dict, cls: type, path: str, text: str) -> None:
    """Set ``path`` in a (partial) config dict, typed by the config dataclass ``cls``."""
    name, _, rest = path.partition(".")
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ValueError(f"unknown model setting {name!r}; {cls.__name__} has {', '.join(hints)}")
    section = _dataclass_of(hints[name])
    if rest:
        if section is None:
            raise ValueError(f"model setting {name} has no parts; write model.{name}=VALUE")
        _set_in_config(data.setdefault(name, {}), section, rest, text)
    elif section is not None:
        example = next(iter(typing.get_type_hints(section)))
        raise ValueError(f"model.{name} is a section; set one of its fields, e.g. model.{name}.{example}")
    else:
        value = parse(text, hints[name], f"model.{name}")
        data[name] = list(value) if isinstance(value, tuple) else value  # JSON-shaped, as config.json


def _dataclass_of(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def parse(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of type ``hint``; ``ValueError`` naming ``key`` and the type otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return parse(text, members[0], key)
        raise ValueError(f"{key} cannot be set from the command line")
    if hint is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{key} takes true or false, not {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"{key} takes {'an integer' if hint is int else 'a number'}, not {text!r}") from None
    if hint is str:
        return text
    if origin in (tuple, list):
        items = [t.strip() for t in text.split(",") if t.strip()] if text.lower() not in _NONE else []
        return origin(parse(item, args[0], key) for item in items)
    raise ValueError(f"{key} cannot be set from the command line")
