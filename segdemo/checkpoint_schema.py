"""Checkpoint metadata is untrusted input: one schema, the limits, one-sentence refusals.

A checkpoint's metadata (the JSON document under ``"segdemo"`` in its header) decides
which model segdemo builds, at what input size, with which labels and normalisation, and
what the app shows. A file from elsewhere can say anything, so every field segdemo reads
is checked here, by type, allowed names and numeric range, before anything is built.
:func:`validate_metadata` is the one entry point; ``segdemo.checkpoints`` calls it from
``read_metadata``, ``load_checkpoint`` and ``list_checkpoints``, so the app, the command
line and ``--resume`` apply the same rules. The size of the model a valid document
describes is then measured without allocating it (see ``segdemo.checkpoints``) against
:data:`MAX_PARAMETERS` and :data:`MAX_GFLOPS`.

Model arguments are checked per registered model: the builder's keyword arguments
(``segdemo.models.model_arguments``) are the only ones accepted, each with the rule of
:func:`argument_rules`; an argument without a rule is refused, so a new argument needs one.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from segdemo import limits
from segdemo.config import BASE_WIDTH_RANGE, TrainConfig
from segdemo.geometry import MAX_PIXEL_ASPECT, MIN_PIXEL_ASPECT

FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------- limits
# Declared, with their reasons, in segdemo.limits; named here as the schema uses them.
MAX_METADATA_BYTES = limits.CHECKPOINT_METADATA_MAX_MB * limits.MB
MAX_PARAMETERS = limits.MODEL_MAX_PARAMETERS
MIN_INPUT_SIDE = limits.MODEL_MIN_INPUT_SIDE
MAX_INPUT_SIDE = limits.MODEL_MAX_INPUT_SIDE
MAX_GFLOPS = limits.MODEL_MAX_GFLOPS
MAX_CLASSES = limits.MAX_CLASSES
#: A class name: letters, digits, spaces and ``.,'()/+&-_``, 1..64 characters. Names end
#: up in legends, tables and chart labels, so markup characters are refused.
CLASS_NAME_PATTERN = r"^[\w .,'()/+&-]{1,64}$"
LABEL_SET_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
LEVEL_PATTERN = r"^[1-9][0-9]?$"
PARAMETER_ID_PATTERN = r"^[0-9]{1,9}$"

NUM_LABEL_IDS = 34  # official Cityscapes label ids 0..33 (segdemo.labels.NUM_LABEL_IDS)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence for the user."""


# ------------------------------------------------------------------------------ field types
Byte = Annotated[int, Field(ge=0, le=255)]
Count = Annotated[int, Field(ge=0)]
Side = Annotated[int, Field(ge=MIN_INPUT_SIDE, le=MAX_INPUT_SIDE)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
ClassName = Annotated[str, StringConstraints(pattern=CLASS_NAME_PATTERN)]
LabelSetName = Annotated[str, StringConstraints(pattern=LABEL_SET_NAME_PATTERN)]
LevelKey = Annotated[str, StringConstraints(pattern=LEVEL_PATTERN)]
ParameterId = Annotated[str, StringConstraints(pattern=PARAMETER_ID_PATTERN)]
Mean = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Std = Annotated[float, Field(ge=1e-3, le=10.0, allow_inf_nan=False)]
Score = float | None  # metrics are shown, never computed with: NaN is allowed


class _Fields(BaseModel):
    """Strict JSON types (no "16" for 16, no true for 1) and no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid", protected_namespaces=())


class _OpenFields(_Fields):
    """Strict types for the known keys; other keys may hold any JSON (shown, never used)."""

    model_config = ConfigDict(extra="allow")


class LabelSetFields(_Fields):
    """``segdemo.labels.LabelSet.to_dict()``."""

    name: LabelSetName
    names: Annotated[list[ClassName], Field(min_length=2, max_length=MAX_CLASSES)]
    colors: list[tuple[Byte, Byte, Byte]]
    ignore_index: Byte = 255
    label_id_to_train_id: list[Byte] = []

    @model_validator(mode="after")
    def _consistent(self) -> LabelSetFields:
        if len(self.colors) != len(self.names):
            raise ValueError(f"has {len(self.names)} names but {len(self.colors)} colours")
        if self.ignore_index < len(self.names):
            raise ValueError(
                f"has ignore_index {self.ignore_index}, which is one of its "
                f"{len(self.names)} class ids"
            )
        if self.label_id_to_train_id and len(self.label_id_to_train_id) != NUM_LABEL_IDS:
            raise ValueError(
                f"maps {len(self.label_id_to_train_id)} label ids, not the {NUM_LABEL_IDS} "
                "Cityscapes ones"
            )
        return self


class NormalizationFields(_Fields):
    """RGB mean and std of the input, in 0..1 units."""

    mean: tuple[Mean, Mean, Mean]
    std: tuple[Std, Std, Std]


class MetricsFields(_OpenFields):
    """Validation metrics (``segdemo.evaluate``) as the app reads them."""

    miou: Score = None
    pixel_accuracy: Score = None
    per_class_iou: dict[ClassName, Score] = {}
    per_class_precision: dict[ClassName, Score] = {}
    per_class_recall: dict[ClassName, Score] = {}
    per_level: dict[Literal["fast", "accurate"], dict[LevelKey, MetricsFields]] = {}
    confusion_matrix: list[list[Count]] | None = None
    images: Count | None = None
    pixels: Count | None = None


class EvaluatedFields(MetricsFields):
    """An evaluation after training (``segdemo eval --store``): the split and how many of
    its images it counted, so the figure is always shown with what it was measured on."""

    split: Literal["train", "val"]
    max_items: Count | None = None  # None: the whole split
    dataset: ShortText = None  # "<format> · <folder name>"
    dataset_fingerprint: ShortText = None
    created: ShortText = None


class RunMetricsFields(_Fields):
    last: MetricsFields | None = None
    best: MetricsFields | None = None
    evaluated: EvaluatedFields | None = None


class TrainStateFields(_OpenFields):
    """Where a run stands (``last.safetensors``, read by ``--resume``)."""

    epoch: Count = 0
    step: Count = 0
    step_in_epoch: Count = 0
    best_miou: float = -1.0
    history: list[dict[str, JsonValue]] = []
    best_metrics: MetricsFields | None = None
    last_metrics: MetricsFields | None = None


class ParamGroupFields(_OpenFields):
    params: list[Count]


class OptimizerFields(_Fields):
    """The non-tensor part of an optimizer state dict (``flatten_optimizer_state``)."""

    param_groups: list[ParamGroupFields]
    plain: dict[ParameterId, dict[str, JsonValue]] = {}


class TrainingFramesFields(_Fields):
    """The geometry a model was trained at (``segdemo.geometry.TrainingFrames``)."""

    input_size: tuple[Side, Side]
    pixel_aspect: Annotated[
        float, Field(ge=MIN_PIXEL_ASPECT, le=MAX_PIXEL_ASPECT, allow_inf_nan=False)
    ]


def _registered_model(name: str) -> str:
    from segdemo.models import list_models

    if name not in list_models():
        raise ValueError(f"is not a segdemo model (valid: {', '.join(list_models())})")
    return name


class CheckpointMetadata(_OpenFields):
    """Every top-level field segdemo reads. ``model_kwargs`` and ``train_config`` are then
    checked against the model's builder and ``TrainConfig`` (:func:`validate_metadata`)."""

    format_version: Annotated[int, Field(ge=1, le=FORMAT_VERSION)] = FORMAT_VERSION
    model: Annotated[str, StringConstraints(max_length=64), AfterValidator(_registered_model)]
    model_kwargs: dict[str, JsonValue] = {}
    num_classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)]
    label_set: LabelSetFields
    input_size: tuple[Side, Side]
    normalization: NormalizationFields
    # Optional fields may be absent, never null: readers use ``meta.get(key, default)``.
    versions: dict[ShortText, ShortText] = {}
    created: ShortText = None
    storage_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    precision: ShortText = None
    epoch: Count = None
    step: Count = None
    metrics: RunMetricsFields = None
    dataset_fingerprint: ShortText = None
    dataset_format: ShortText = None  # the format training read (also when it was "auto")
    history: list[dict[str, JsonValue]] = None
    train_config: dict[str, JsonValue] = None
    training_frames: TrainingFramesFields = None
    train_state: TrainStateFields = None
    optimizer: OptimizerFields = None
    # Accurate mode's head weights per level (--accurate-weights fit); their lengths and
    # levels are checked against the model (segdemo.checkpoints).
    accurate_weights: dict[LevelKey, list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]] = (
        None
    )
    saved_weights: Literal["trained", "ema"] = None  # which weights model/ holds (--ema)

    @field_validator("format_version", mode="wrap")
    @classmethod
    def _newer(cls, value, handler):
        if isinstance(value, int) and not isinstance(value, bool) and value > FORMAT_VERSION:
            raise ValueError(
                f"is {value}: the file was written by a newer segdemo (this one reads "
                f"{FORMAT_VERSION})"
            )
        return handler(value)

    @model_validator(mode="after")
    def _classes_match(self) -> CheckpointMetadata:
        if self.num_classes != len(self.label_set.names):
            raise ValueError(
                f"num_classes is {self.num_classes} but label_set names "
                f"{len(self.label_set.names)} classes"
            )
        return self


# ----------------------------------------------------------------------- model arguments
def _known_encoder(name: str) -> str:
    from segdemo.models.encoders import check_encoder

    try:
        check_encoder(name, None)
    except ValueError:
        raise ValueError(
            "is not an encoder segdemo knows (an smp encoder name or tu-<timm model>)"
        ) from None
    return name


@functools.cache
def argument_rules() -> dict[str, Any]:
    """The rule of every model argument segdemo accepts from a checkpoint, by name.

    Ranges are what a sane build needs (the parameter and compute limits catch the rest);
    ``encoder`` must be an smp encoder or ``tu-<timm model>``.
    """
    from segdemo.models.encoders import VALID_WEIGHTS
    from segdemo.models.unet import UPSAMPLING_MODES

    weights = tuple(w for w in VALID_WEIGHTS if w is not None)
    return {
        "base_width": Annotated[int, Field(ge=BASE_WIDTH_RANGE[0], le=BASE_WIDTH_RANGE[1])],
        "deep_supervision": bool,
        "upsampling": Literal[UPSAMPLING_MODES],
        "dropout": Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)],
        # Photos are RGB: a model with other input channels cannot segment them.
        "in_channels": Literal[3],
        "encoder": Annotated[
            str, StringConstraints(max_length=100), AfterValidator(_known_encoder)
        ],
        "encoder_weights": Literal[weights] | None,
        "encoder_depth": Annotated[int, Field(ge=3, le=5)],
        "decoder_channels": Annotated[
            list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=1, max_length=5)
        ]
        | None,
    }


@functools.cache
def model_arguments_schema(model: str) -> type[BaseModel]:
    """A strict schema of ``model``'s keyword arguments, from its builder's signature.

    Raises:
        KeyError: an argument of the builder has no rule in :func:`argument_rules`.
    """
    from segdemo.models import model_arguments

    rules = argument_rules()
    fields = {}
    for name, parameter in model_arguments(model).items():
        if name not in rules:
            raise KeyError(name)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (rules[name], default)
    return create_model(
        f"{model}_arguments",
        __config__=ConfigDict(strict=True, extra="forbid", protected_namespaces=()),
        **fields,
    )


def check_model_arguments(model: str, kwargs: dict[str, Any], name=lambda key: key) -> None:
    """Refuse model arguments that a checkpoint of ``model`` could not declare: the rules
    of :func:`argument_rules`, so what training accepts, loading accepts.

    Args:
        name: how a message names an argument (the command line: its flag).

    Raises:
        ValueError: one sentence naming the first wrong argument and its value.
    """
    try:
        text = json.dumps(kwargs)
    except (TypeError, ValueError):
        raise ValueError(f"the arguments of {model} must be plain values, got {kwargs!r}") from None
    try:
        model_arguments_schema(model).model_validate_json(text, strict=True)
    except KeyError as e:
        raise ValueError(f"{model}'s argument {e.args[0]} has no rule to check it") from None
    except ValidationError as e:
        error = e.errors()[0]
        key = error["loc"][0] if error["loc"] else ""
        got = f", got {_shown(error['input'])}" if "input" in error else ""
        raise ValueError(f"{name(key) if key else model} {_problem(error)}{got}") from None


@functools.cache
def _train_config_adapter() -> TypeAdapter:
    return TypeAdapter(TrainConfig)


# ----------------------------------------------------------------------------- messages
_PROBLEMS = {
    "dict_type": "should be a JSON object",
    "model_type": "should be a JSON object",
    "dataclass_type": "should be a JSON object",
    "list_type": "should be a list",
    "tuple_type": "should be a list",
    "int_type": "should be a whole number",
    "float_type": "should be a number",
    "bool_type": "should be true or false",
    "string_type": "should be a string",
    "finite_number": "should be a finite number",
    "greater_than_equal": "should be at least {ge}",
    "less_than_equal": "should be at most {le}",
    "string_too_long": "should have at most {max_length} characters",
    "too_long": "should have at most {max_length} items",
    "too_short": "should have at least {min_length} items",
}
_PATTERN_PROBLEMS = {
    CLASS_NAME_PATTERN: "should be 1 to 64 letters, digits, spaces or .,'()/+&-_",
    LABEL_SET_NAME_PATTERN: "should be 1 to 64 letters, digits or ._-",
    LEVEL_PATTERN: "should be a pruning level (1, 2, ...)",
    PARAMETER_ID_PATTERN: "should be a parameter number",
}


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _shown(value: Any) -> str:
    """A value as it appears in a message: JSON, one line, at most 60 characters."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_PROBLEMS:
        return _PATTERN_PROBLEMS[ctx["pattern"]]
    if kind in _PROBLEMS:
        return _PROBLEMS[kind].format(**ctx)
    return error["msg"].replace("Input should", "should", 1)


def _sentence(name: str, error: dict, prefix: tuple = (), model: str | None = None) -> str:
    loc = prefix + tuple(error["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-2]  # pydantic's loc is (..., key, "[key]")
    field = _field_path(loc)
    kind = error["type"]
    if kind == "missing":
        return f"{name}'s metadata lacks {field}"
    if kind == "extra_forbidden":
        if prefix == ("model_kwargs",) and model is not None:
            from segdemo.models import model_arguments

            takes = ", ".join(model_arguments(model)) or "no arguments"
            return (
                f"{name}'s metadata gives {model} an argument it does not take: {field} "
                f"({model} takes {takes})"
            )
        return f"{name}'s metadata has a field segdemo does not know: {field}"
    if kind == "json_invalid":
        return f"{name} has corrupt segdemo metadata ({error['msg']})"
    problem = _problem(error)
    if kind == "value_error":
        if prefix == ("train_config",):
            return (
                f"{name} has invalid metadata: train_config is not a valid training setup "
                f"({problem})"
            )
        return f"{name} has invalid metadata: {f'{field} ' if field else ''}{problem}"
    got = f", got {_shown(error['input'])}" if "input" in error else ""
    if is_key:
        return f"{name} has invalid metadata: {field} has a key that {problem}{got}"
    return f"{name} has invalid metadata: {field or 'the metadata'} {problem}{got}"


def _refusal(name: str, error: ValidationError, prefix: tuple = (), model=None) -> CheckpointError:
    return CheckpointError(_sentence(name, error.errors()[0], prefix, model))


# --------------------------------------------------------------------------- validation
def validate_metadata(text: str | bytes, name: str) -> dict[str, Any]:
    """Check a checkpoint's metadata document against the schema.

    Args:
        text: the JSON text stored under ``"segdemo"``.
        name: the file name, for messages.

    Returns:
        The document as a dict, exactly as stored.

    Raises:
        CheckpointError: one sentence naming the file and the first field that is wrong.
    """
    if len(text) > MAX_METADATA_BYTES:
        raise CheckpointError(
            f"{name}'s segdemo metadata is {len(text) / 2**20:.0f} MB, more than the "
            f"{MAX_METADATA_BYTES // 2**20} MB segdemo reads"
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{name} has corrupt segdemo metadata (not JSON: {e})") from None
    if not isinstance(document, dict):
        raise CheckpointError(
            f"{name}'s segdemo metadata should be a JSON object, got {_shown(document)}"
        )
    try:
        fields = CheckpointMetadata.model_validate_json(text, strict=True)
    except ValidationError as e:
        raise _refusal(name, e) from None

    try:
        arguments = model_arguments_schema(fields.model)
    except KeyError as e:
        raise CheckpointError(
            f"{name} describes a {fields.model}, whose argument {e.args[0]} segdemo has no "
            "rule to check"
        ) from None
    try:
        arguments.model_validate_json(json.dumps(document.get("model_kwargs", {})), strict=True)
    except ValidationError as e:
        raise _refusal(name, e, ("model_kwargs",), fields.model) from None

    if fields.train_config is not None:
        _check_train_config(name, document)
    return document


def _check_train_config(name: str, document: dict) -> None:
    """``train_config`` is a valid ``TrainConfig`` that trained this very model: ``--resume``
    rebuilds the model from it."""
    config = document["train_config"]
    try:
        _train_config_adapter().validate_json(json.dumps(config), strict=True)
    except ValidationError as e:
        raise _refusal(name, e, ("train_config",)) from None
    expected = {
        "model": document["model"],
        "model_kwargs": document.get("model_kwargs", {}),
        "size": document["input_size"],
        "label_set": document["label_set"]["name"],
    }
    for key, value in expected.items():
        if key in config and json.dumps(config[key], sort_keys=True) != json.dumps(
            value, sort_keys=True
        ):
            top = {"size": "input_size", "label_set": "label_set.name"}.get(key, key)
            raise CheckpointError(
                f"{name} has invalid metadata: train_config.{key} is {_shown(config[key])} "
                f"but {top} is {_shown(value)}"
            )
