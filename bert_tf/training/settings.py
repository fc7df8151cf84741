"""Settings live once: a dataclass field holds a setting's name, type, default and help, and the absl flags of
the programs are generated from those fields (as the Model Garden's config dataclasses are the source of its
flags), so no program declares a default a second time and no flag rewrites another.

>>> import dataclasses
>>> from absl import flags
>>> from bert_tf.training import settings
>>> @dataclasses.dataclass
... class Demo:
...     learning_rate: float = settings.setting(2e-5, "Peak learning rate.")
...     optimizer: str = settings.setting("adamw", "Optimizer.", choices=("adamw", "lamb"))
>>> fv = flags.FlagValues()
>>> settings.define_flags(Demo, flag_values=fv)
>>> fv(["prog", "--learning_rate=1e-4"]) and settings.from_flags(Demo, fv)
Demo(learning_rate=0.0001, optimizer='adamw')
"""

import dataclasses
import types
import typing

from absl import flags


class ConfigError(ValueError):
    """Settings that cannot work together (checked before any work starts); programs print it as a usage error."""


def setting(default, help, choices=None):  # noqa: A002 (absl's word)
    """A dataclass field that is also a flag: `default`, `help`, and `choices` for an enum."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _base_type(annotation):
    """`int | None` -> int; `list | None` -> list."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def _define(field, annotation, flag_values):
    kind = _base_type(annotation)
    help_text = field.metadata.get("help") or field.name
    choices = field.metadata.get("choices")
    args = dict(name=field.name, default=field.default, help=help_text, flag_values=flag_values)
    if choices:
        flags.DEFINE_enum(enum_values=list(choices), **args)
    elif kind is bool:
        flags.DEFINE_bool(**args)
    elif kind is int:
        flags.DEFINE_integer(**args)
    elif kind is float:
        flags.DEFINE_float(**args)
    elif kind is list:
        flags.DEFINE_list(**args)
    elif kind is str:
        flags.DEFINE_string(**args)
    else:
        raise TypeError(f"setting {field.name}: no flag type for {annotation!r}")


def define_flags(*config_classes, flag_values=flags.FLAGS):
    """Defines one flag per field of the dataclasses (a name shared by two classes must have the same type,
    default and help: it is one setting)."""
    seen = {}
    for cls in config_classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{field.name} has no default: a flag needs one")
            key = (_base_type(hints[field.name]), field.default, field.metadata.get("help"),
                   field.metadata.get("choices"))
            if field.name in seen:
                if seen[field.name] != key:
                    raise TypeError(f"setting {field.name} is declared twice with different types, defaults or help")
                continue
            seen[field.name] = key
            _define(field, hints[field.name], flag_values)


def from_flags(cls, flag_values=flags.FLAGS):
    """An instance of the dataclass `cls` from the parsed flags of the same names."""
    return cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls)})
