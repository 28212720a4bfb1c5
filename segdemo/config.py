"""``TrainConfig``: the one list of training settings.

Each field carries its command-line flag, its help text and whether it may change when a
run is resumed. The ``train`` command's parser, the app's run arguments and Train form,
and the one resume check are all derived from these fields; adding a setting is one edit
here (and its use in the engine).

A config is saved verbatim into every checkpoint, so a checkpoint rebuilds its model and
a stopped run continues without guessing. Configs saved before a field existed load with
that field's default, which is always the behaviour from before the field existed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdemo import limits

SCHEDULES = ("poly", "cosine")
LOSSES = ("ce", "dice", "ce_dice", "ohem_ce_dice")  # segdemo.losses builds them
PRECISIONS = ("auto", "bf16", "fp32")
PHOTOMETRIC = ("jitter", "strong")
GEOMETRY_AUGMENT = ("crop", "aspect_scale")
CLASS_WEIGHTING = ("none", "sqrt_inverse_frequency")
ACCURATE_WEIGHTS = ("uniform", "fit")
#: ``base_width`` of the scratch models (``--base-width``; the paper's U-Net is 64): the
#: checkpoint schema reads the same range, so what training accepts, loading accepts.
BASE_WIDTH_RANGE = (1, 128)
#: Images of the synthetic set's train split (``--synthetic-length``).
MAX_SYNTHETIC_LENGTH = 100_000
#: Bootstrap defaults of ``eval``, ``compare``, ``report`` and studies (segdemo.stats).
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    resumable: bool = False,
    choices: tuple[str, ...] | None = None,
    cli: bool = True,
    factory: Any = dataclasses.MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A ``TrainConfig`` field with what the parser, the form and the resume check need.

    Args:
        help: one line for ``--help`` and the app's form.
        flag: the command-line flag (default ``--<name with dashes>``).
        resumable: the value may differ when a stopped run is resumed (how long and where
            it runs); every other field defines the run, and resuming with another value
            is refused.
        choices: the allowed values of a string setting.
        cli: False for fields that have no flag of their own (set through other flags).
        minimum, maximum: the smallest and largest value of a number (of each side of a
            pair); ``above``, ``below``: the value must be greater, smaller than this.

    The type comes from the field's annotation: :func:`checked_setting` checks a value
    against type, range and choices, whether it comes from the command line, a study
    file, the app's form or a checkpoint.
    """
    metadata = {"help": help, "flag": flag, "resumable": resumable, "choices": choices,
                "cli": cli, "minimum": minimum, "maximum": maximum, "above": above,
                "below": below}  # fmt: skip
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved verbatim into every checkpoint."""

    data: str = setting("synthetic", "dataset folder, or 'synthetic' for the built-in set")
    data_format: str = setting(
        "auto", "dataset format: auto (detect), pairs, cityscapes, kitti, folder, synthetic",
        flag="--format",
    )  # fmt: skip
    label_set: str = setting("cityscapes19", "cityscapes19 (19 classes) or road (binary)")
    data_options: dict[str, Any] = setting(factory=dict, cli=False)
    model: str = setting("unet", "registered model name (python -m segdemo bench lists them)")
    model_kwargs: dict[str, Any] = setting(factory=dict, cli=False)
    init_from: str | None = setting(
        None, "start from the weights of this checkpoint (fine-tuning; same model and classes)"
    )
    size: tuple[int, int] = setting(
        (128, 256), "HxW the model is trained at, e.g. 256x256",
        minimum=limits.MODEL_MIN_INPUT_SIDE, maximum=limits.MODEL_MAX_INPUT_SIDE,
    )  # fmt: skip
    batch_size: int = setting(
        8, "images per step and process", flag="--batch",
        minimum=1, maximum=limits.CLI_MAX_BATCH,
    )  # fmt: skip
    epochs: int = setting(
        10, "epochs to train (may grow when resuming)", resumable=True, minimum=1, maximum=10_000
    )
    max_steps: int | None = setting(
        None, "stop after this many optimizer steps in total", resumable=True,
        minimum=1, maximum=10**9,
    )  # fmt: skip
    optimizer: str = setting("adamw", cli=False, choices=("adamw",))
    lr: float = setting(2e-3, "AdamW learning rate (decoder and heads)", above=0, maximum=10)
    weight_decay: float = setting(1e-4, "AdamW weight decay", minimum=0, maximum=10)
    schedule: str = setting("poly", "learning-rate decay after the warm-up", choices=SCHEDULES)
    warmup_steps: int = setting(
        100, "linear warm-up steps (at most a tenth of the run)", minimum=0, maximum=10**9
    )
    loss: str = setting("ce_dice", "training loss of every head", choices=LOSSES)
    class_weighting: str = setting(
        "none",
        "cross-entropy class weights from the training masks' class frequencies",
        choices=CLASS_WEIGHTING,
    )
    ds_weights: str = setting(
        "uniform",
        "deep supervision: weight of each head in the loss: uniform, deep (head j of L "
        "weighs 2^j, normalised: the deepest most) or a list W1,...,WL (normalised)",
    )
    ds_distill: float = setting(
        0.0, "deep supervision: weight of a KL term teaching every shallower head the deepest "
        "head's softened prediction (detached); 0 turns it off", minimum=0, maximum=100,
    )  # fmt: skip
    ds_temperature: float = setting(
        1.0, "deep supervision: temperature of the --ds-distill term's softmax", above=0,
        maximum=100,
    )  # fmt: skip
    ema: float | None = setting(
        None, "keep an exponential moving average of the weights with this decay (e.g. 0.999); "
        "validated beside the trained weights, and saved instead of them when it scores higher",
        above=0, below=1,
    )  # fmt: skip
    accurate_weights: str = setting(
        "uniform",
        "U-Net++ accurate mode: uniform (the mean of the heads) or fit (a weighted mean, "
        "weights chosen on the training split after training)",
        choices=ACCURATE_WEIGHTS,
    )
    encoder_lr_mult: float = setting(
        1.0, "the encoder's learning rate is lr x this (e.g. 0.1 for a pretrained encoder)",
        above=0, maximum=10,
    )  # fmt: skip
    augment: bool = setting(True, "turn off flips, crops and colour changes", flag="--no-augment")
    scale_range: tuple[float, float] | None = setting(
        None, "multi-scale training: scale each frame by a random factor in MIN,MAX, then crop",
        above=0, maximum=10,
    )  # fmt: skip
    photometric: str = setting(
        "jitter", "colour augmentation: jitter, or strong (also gamma, blur, noise, JPEG)",
        choices=PHOTOMETRIC,
    )  # fmt: skip
    geometry_augment: str = setting(
        "crop",
        "geometric augmentation: crop (random resized crop), or aspect_scale (frames "
        "stretched to 1:1-3.5:1 scenes after the pairs' squeeze and objects scaled "
        "0.5x-2x, for photos of other shapes and cameras)",
        choices=GEOMETRY_AUGMENT,
    )
    seed: int = setting(
        0, "random seed (model initialisation, data order, augmentation)",
        minimum=limits.CLI_SEED_RANGE[0], maximum=limits.CLI_SEED_RANGE[1],
    )  # fmt: skip
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...", resumable=True)
    precision: str = setting(
        "auto", "auto = bf16 + channels_last where fast, else fp32", resumable=True,
        choices=PRECISIONS,
    )  # fmt: skip
    workers: int | None = setting(
        None,
        "DataLoader worker processes (default: the CPU cores training leaves free; 0 loads in "
        "the main process)",
        resumable=True, minimum=0, maximum=256,
    )  # fmt: skip
    out: str = setting("runs/latest", "run folder (default runs/<model>)", resumable=True)
    log_every: int = setting(
        10, "steps between progress events", resumable=True, minimum=1, maximum=10**9
    )
    val_max_items: int | None = setting(
        None, "validate on the first N val images (default: all)", resumable=True,
        minimum=1, maximum=10**9,
    )  # fmt: skip

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, checked_setting(f.name, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting (as its flag) for a value that cannot work.

        Each value is checked on its own by :func:`checked_setting` (type, range, choices);
        here are the checks that need several settings or the registries.
        """
        from segdemo import runtime
        from segdemo.checkpoint_schema import check_model_arguments
        from segdemo.labels import list_label_sets
        from segdemo.models import list_models, model_arguments

        parse_head_weights(self.ds_weights)
        if self.scale_range is not None and self.geometry_augment != "crop":
            raise ValueError("--scale-range and --geometry-augment aspect_scale both scale frames")
        if self.scale_range is not None and self.scale_range[0] > self.scale_range[1]:
            lo, hi = self.scale_range
            raise ValueError(f"--scale-range must be MIN,MAX with MIN <= MAX, got {lo},{hi}")
        if self.label_set not in list_label_sets():
            raise ValueError(
                f"unknown label set {self.label_set!r}; valid: {', '.join(list_label_sets())}"
            )
        if self.model not in list_models():
            raise ValueError(
                f"unknown model {self.model!r}; valid models: {', '.join(list_models())}"
            )
        accepted = model_arguments(self.model)
        unknown = sorted(set(self.model_kwargs) - set(accepted))
        if unknown:
            flags = [MODEL_FLAGS[k][0] if k in MODEL_FLAGS else k for k in unknown]
            raise ValueError(
                f"{self.model} does not take {', '.join(flags)}; its arguments are "
                f"{', '.join(accepted)}"
            )
        check_model_arguments(self.model, self.model_kwargs, name=flag_of)
        runtime.check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from saved values; unknown keys are ignored, missing ones take their
        default (a config saved before a field existed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def changed_identity(self, saved: TrainConfig) -> list[str]:
        """Flags of the settings that define a run and differ from ``saved`` (resume check)."""
        return [
            f"{flag_of(f.name)} (was {_show(getattr(saved, f.name))}, now "
            f"{_show(getattr(self, f.name))})"
            for f in dataclasses.fields(self)
            if not f.metadata.get("resumable")
            and _canonical(getattr(self, f.name)) != _canonical(getattr(saved, f.name))
        ]


def parse_head_weights(text: str) -> str | tuple[float, ...]:
    """``--ds-weights``: ``"uniform"``, ``"deep"`` or positive finite numbers ``W1,...,WL``
    (shallowest head first), returned as given or as a tuple of floats.

    Raises:
        ValueError: anything else, naming the flag.
    """
    if text in ("uniform", "deep"):
        return text
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"--ds-weights must be uniform, deep or positive numbers W1,...,WL, got {text!r}"
        )
    return values


def flag_of(name: str) -> str:
    """The command-line flag of ``TrainConfig`` field (or model argument) ``name``."""
    if name in MODEL_FLAGS:
        return MODEL_FLAGS[name][0]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name in fields:
        return fields[name].metadata.get("flag") or "--" + name.replace("_", "-")
    return name


class SettingError(ValueError):
    """A value a ``TrainConfig`` setting cannot take. The message names the setting by its
    flag; ``problem`` says what is wrong without naming it (a study file names it its way)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{flag_of(name)} {problem}")
        self.name = name
        self.problem = problem


MAX_TEXT_SETTING = 4096  # characters of a text setting (a path, a name)


def _shown(value: Any) -> str:
    """A value as a message shows it: its repr, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(name: str, kind: str, value: Any, meta, pair: Any = None) -> int | float:
    """A number setting (or one side of ``pair``) checked against its type and range."""
    whole = kind == "int"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        if pair is not None:
            what = "HxW, two whole numbers" if whole else "MIN,MAX, two numbers"
            raise SettingError(name, f"must be {what}, got {_shown(pair)}")
        what = "a whole number" if whole else "a number"
        raise SettingError(name, f"must be {what}, got {_shown(value)}")
    if not whole:
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
    got = _shown(value) if pair is None else _format_value(pair)
    if not whole and not math.isfinite(value):
        raise SettingError(name, f"must be a finite number, got {got}")
    each = "" if pair is None else "each value "
    if meta.get("above") is not None and not value > meta["above"]:
        raise SettingError(name, f"{each}must be greater than {_bound(meta['above'])}, got {got}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise SettingError(name, f"{each}must be at least {_bound(meta['minimum'])}, got {got}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise SettingError(name, f"{each}must be at most {_bound(meta['maximum'])}, got {got}")
    if meta.get("below") is not None and not value < meta["below"]:
        raise SettingError(name, f"{each}must be smaller than {_bound(meta['below'])}, got {got}")
    return value


def checked_setting(name: str, value: Any) -> Any:
    """``value`` as ``TrainConfig`` setting ``name`` holds it, after checking its type (from
    the field's annotation), range and choices (from its :func:`setting`).

    A list for a pair becomes a tuple and a whole number for a float a float; nothing else
    is converted: ``"10"`` is not a whole number and ``1`` is not true.

    Raises:
        SettingError: one sentence naming the setting and the value.
    """
    f = _fields_by_name()[name]
    meta = f.metadata
    kind = str(f.type).removesuffix(" | None")
    if value is None:
        if str(f.type).endswith(" | None"):
            return None
        raise SettingError(name, "must be given")
    if kind == "bool":
        if not isinstance(value, bool):
            raise SettingError(name, f"must be true or false, got {_shown(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise SettingError(name, f"must be a non-empty text, got {_shown(value)}")
        if len(value) > MAX_TEXT_SETTING or "\x00" in value:
            raise SettingError(
                name, f"must be at most {MAX_TEXT_SETTING} characters, without NUL characters"
            )
        if meta.get("choices") and value not in meta["choices"]:
            raise SettingError(
                name, f"must be one of {', '.join(meta['choices'])}, got {_shown(value)}"
            )
        return value
    if kind == "dict[str, Any]":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SettingError(name, f"must be a table of named values, got {_shown(value)}")
        return dict(value)
    if kind in ("int", "float"):
        return _number(name, kind, value, meta)
    element = kind.removeprefix("tuple[").split(",")[0]  # tuple[int, int] -> int
    if not isinstance(value, tuple | list) or len(value) != 2:
        what = "HxW, two whole numbers" if element == "int" else "MIN,MAX, two numbers"
        raise SettingError(name, f"must be {what}, got {_shown(value)}")
    return tuple(_number(name, element, v, meta, value) for v in value)


@functools.cache
def _fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def resumable_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable"))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "x".join(str(v) for v in value) if value else "[]"
    return repr(value)


# Model keyword arguments that have a flag of their own; any other goes through
# --model-arg KEY=VALUE. (flag, help); deep_supervision also has --no-deep-supervision.
MODEL_FLAGS: dict[str, tuple[str, str]] = {
    "base_width": ("--base-width", "scratch models (unet, unetpp): channels at level 0"),
    "encoder": ("--encoder", "smp-encoder models: encoder name, e.g. resnet18"),
    "encoder_weights": ("--encoder-weights", "smp-encoder models: imagenet or none"),
    "deep_supervision": ("--deep-supervision", "unetpp: heads on X^{0,1..4}, prunable"),
}


# --------------------------------------------------------------------------- command line


def _pair(parse, separator: str, what: str):
    def parse_pair(text: str) -> tuple:
        parts = text.lower().replace(",", separator).split(separator)
        try:
            values = tuple(parse(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if len(values) == 1:
            values = values * 2
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values

    return parse_pair


parse_size = _pair(int, "x", "HxW, e.g. 256x512")
parse_float_pair = _pair(float, ",", "MIN,MAX, e.g. 0.5,2.0")


def _model_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _argument_type(f: dataclasses.Field) -> Any:
    """The parser of a setting's flag: the text as the field's type, then
    :func:`checked_setting`, so a bad value is an argument error before anything loads."""
    kind = str(f.type).replace(" | None", "")
    parse = {
        "int": int,
        "float": float,
        "str": str,
        "tuple[int, int]": parse_size,
        "tuple[float, float]": parse_float_pair,
    }[kind]

    def parse_setting(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            what = {"int": "a whole number", "float": "a number"}[kind]
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return checked_setting(f.name, value)
        except SettingError as e:
            raise argparse.ArgumentTypeError(e.problem) from None

    return parse_setting


def _range_text(low: float | None, high: float | None) -> str:
    if high is None:
        return f"at least {_bound(low)}"
    return f"{_bound(low)} to {_bound(high)}"


def int_in(low: int, high: int | None = None):
    """An argparse ``type``: a whole number from ``low`` to ``high`` (None: no limit)."""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high)}, got {value}")
        return value

    return parse_int


def float_in(low: float, high: float):
    """An argparse ``type``: a finite number from ``low`` to ``high``."""

    def parse_float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high)}, got {text}")
        return value

    return parse_float


def _format_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        separator = "x" if all(isinstance(v, int) for v in value) else ","
        return separator.join(str(v) for v in value)
    return str(value)


def parse_input_size(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``HxW`` within the sides a model may take (as ``--size``)."""
    return _argument_type(_fields_by_name()["size"])(text)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's flags: one per ``TrainConfig`` field, plus the model flags.

    Use with ``argument_default=argparse.SUPPRESS``: only what the user typed is set.
    """
    defaults = TrainConfig.__dataclass_fields__
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli"):
            continue
        default = defaults[f.name].default
        help_text = meta["help"]
        if f.type == "bool":
            parser.add_argument(flag_of(f.name), dest=f.name, action="store_false", help=help_text)
            continue
        if default is not None:
            help_text += f" (default {_format_value(default)})"
        parser.add_argument(
            flag_of(f.name), dest=f.name, type=_argument_type(f), choices=meta["choices"],
            help=help_text, metavar=f.name.upper() if not meta["choices"] else None,
        )  # fmt: skip
    for name, (flag, help_text) in MODEL_FLAGS.items():
        if name == "deep_supervision":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(flag, dest=name, action="store_true", help=help_text)
            group.add_argument("--no-deep-supervision", dest=name, action="store_false",
                               help="unetpp: one head on X^{0,4} (the paper's w/o DS)")  # fmt: skip
        elif name == "encoder_weights":
            parser.add_argument(flag, dest=name, choices=["imagenet", "none"], help=help_text)
        else:
            kind = int_in(*BASE_WIDTH_RANGE) if name == "base_width" else str
            parser.add_argument(flag, dest=name, type=kind, help=help_text)
    parser.add_argument("--model-arg", dest="model_arg", type=_model_arg, action="append",
                        metavar="KEY=VALUE", help="any other model keyword argument (repeatable)")  # fmt: skip
    parser.add_argument("--synthetic-length", dest="synthetic_length",
                        type=int_in(1, MAX_SYNTHETIC_LENGTH),
                        help="images in the synthetic train split")  # fmt: skip


def values_from_arguments(given: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig`` values from parsed arguments (only those present are returned)."""
    values = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig) if f.name in given}
    model_kwargs = dict(given.get("model_arg") or [])
    for name in MODEL_FLAGS:
        if name in given:
            model_kwargs[name] = given[name]
    if model_kwargs.get("encoder_weights") == "none":
        model_kwargs["encoder_weights"] = None
    if model_kwargs:
        values["model_kwargs"] = model_kwargs
    if "synthetic_length" in given:
        values["data_options"] = {"length": given["synthetic_length"]}
    return values


def to_arguments(config: TrainConfig) -> list[str]:
    """``python -m segdemo train`` arguments that rebuild ``config`` (without ``--out``).

    Settings equal to their default are left out, except the data, model, size, batch and
    epochs, which make a command readable at a glance.

    Raises:
        ValueError: ``data_options`` other than ``length`` (no flag for them).
    """
    always = ("data", "model", "size", "batch_size", "epochs")
    arguments = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name == "out" or not f.metadata.get("cli") or value is None:
            continue
        if f.name == "data" and value != "synthetic":
            value = str(Path(value).resolve())
        if f.name not in always and value == TrainConfig.__dataclass_fields__[f.name].default:
            continue
        if f.type == "bool":
            if not value:
                arguments.append(flag_of(f.name))
            continue
        arguments += [flag_of(f.name), _format_value(value)]
    for name, value in config.model_kwargs.items():
        if name == "deep_supervision":
            arguments.append("--deep-supervision" if value else "--no-deep-supervision")
        elif name == "encoder_weights":
            arguments += [flag_of(name), value or "none"]
        elif name in MODEL_FLAGS:
            arguments += [flag_of(name), str(value)]
        else:
            arguments += ["--model-arg", f"{name}={json.dumps(value)}"]
    options = dict(config.data_options)
    if "length" in options:
        arguments += ["--synthetic-length", str(options.pop("length"))]
    if options:
        raise ValueError(f"only the data option 'length' can be passed to a run, got {options}")
    return arguments
