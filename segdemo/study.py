"""Studies: several models x several seeds trained the same way, then compared.

A study is a TOML file in ``studies/``: the shared training settings (a ``[train]`` table
of ``TrainConfig`` fields), the seeds and the models with their arguments::

    name = "unet_vs_unetpp"
    seeds = [0, 1, 2]

    [train]
    label_set = "cityscapes19"
    size = [128, 128]
    epochs = 10

    [[models]]
    name = "unet"                    # the run folder, and the name in every table
    model = "unet"
    kwargs = { base_width = 16 }
    train = { ema = 0.999 }          # optional: training settings of this model alone

    [[claims]]                       # optional: comparisons the report states in words
    claim = "deep supervision helps"
    a = "unetpp:accurate:4"          # a model, or model:mode:level for a U-Net++ setting
    b = "unetpp_nods"

``run_study`` trains every (model, seed) as an ordinary training run in
``<out>/<name>/<seed>/``, one at a time: a finished run is skipped, a stopped or killed
one resumes from its ``last.safetensors``. Stopping: a ``STOP`` file in ``<out>`` (or in
the running run's folder), Ctrl-C or SIGTERM ends the current run after its step with a
checkpoint, and no further run starts; running the command again continues.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdemo.config import SettingError, TrainConfig, checked_setting
from segdemo.train import fit, read_progress

STOP_FILE = "STOP"
# TrainConfig fields a study sets per run, never in its shared [train] table.
PER_RUN_FIELDS = ("data", "model", "model_kwargs", "seed", "out")


@dataclass(frozen=True)
class StudyModel:
    """One model of a study: its name in tables and folders, the registered model, its
    keyword arguments and the training settings it alone changes (``train``, over the
    study's shared ``[train]`` table)."""

    name: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    name: str
    seeds: tuple[int, ...]
    models: tuple[StudyModel, ...]
    train: dict[str, Any]
    description: str = ""
    reference: str = ""  # the model every other one is compared with (default: the first)
    claims: tuple[dict[str, str], ...] = ()  # {"claim", "a", "b"}: a against b, in words
    path: Path | None = None

    @property
    def reference_model(self) -> str:
        return self.reference or self.models[0].name

    def run_dir(self, out: str | Path, model: str, seed: int) -> Path:
        return Path(out) / model / str(seed)

    def config(self, data: str, out: str | Path, model: StudyModel, seed: int) -> TrainConfig:
        """The ``TrainConfig`` of one run: the shared settings, the model's own, and the
        model, seed and folder."""
        return TrainConfig.from_dict(
            {
                **self.train,
                **model.train,
                "data": str(data),
                "model": model.model,
                "model_kwargs": dict(model.kwargs),
                "seed": int(seed),
                "out": str(self.run_dir(out, model.name, seed)),
            }
        )

    def runs(self) -> list[tuple[StudyModel, int]]:
        """Every (model, seed), seed by seed: after the first seed every model has a run."""
        return [(model, seed) for seed in self.seeds for model in self.models]


#: A study's name and its models' names become file and folder names (``<out>/<model>/``,
#: ``<report>/<name>.md``): letters, digits and ``_.-``, not starting with a dot, so a name
#: is never a path and nothing is written outside the folder the user named.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits or _.- not starting with a dot"
STUDY_KEYS = ("name", "description", "seeds", "train", "models", "reference", "claims")
MODEL_KEYS = ("name", "model", "kwargs", "description", "train")
CLAIM_KEYS = ("claim", "a", "b")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _StudyFile:
    """The checks of one study file; every refusal names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field: str, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {field} {problem}")

    def text(self, field: str, value: Any, *, name: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(field, f"must be a text, got {_shown(value)}")
        if name and not NAME_PATTERN.match(value):
            raise self.error(field, f"must be {NAME_RULE} (it names a folder), got {_shown(value)}")
        return value

    def table(self, field: str, value: Any, keys: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.error(field, f"must be a table, got {_shown(value)}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise self.error(field, f"has unknown key(s) {', '.join(unknown)}; allowed: "
                                    f"{', '.join(keys)}")  # fmt: skip
        return value

    def tables(self, field: str, value: Any, keys: tuple[str, ...]) -> list[dict]:
        if not isinstance(value, list):
            raise self.error(field, f"must be a list of tables ([[{field}]]), got {_shown(value)}")
        return [self.table(f"{field}[{k}]", entry, keys) for k, entry in enumerate(value)]

    def seeds(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            raise self.error("seeds", f"must be a non-empty list of integers, got {_shown(value)}")
        for k, seed in enumerate(value):
            try:
                checked_setting("seed", seed)
            except SettingError as e:
                raise self.error(f"seeds[{k}]", e.problem) from None
        if len(set(value)) != len(value):
            raise self.error("seeds", f"must be different from each other, got {value}")
        return tuple(value)

    def train(self, value: Any, field: str = "[train]") -> dict[str, Any]:
        """A table of ``TrainConfig`` settings (not the per-run ones), each value checked by
        the setting's own declared type and range."""
        known = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN_FIELDS]
        for key in value if isinstance(value, dict) else ():
            if key in PER_RUN_FIELDS:
                raise self.error(field, f"cannot set {key} (each run sets data, model, "
                                 "model_kwargs, seed and out)")  # fmt: skip
        train = dict(self.table(field, value, tuple(known)))
        for key, setting_value in train.items():
            try:
                train[key] = checked_setting(key, setting_value)
            except SettingError as e:
                raise self.error(f"{field} {key}", e.problem) from None
        return train

    def model(self, k: int, entry: dict) -> StudyModel:
        from segdemo.checkpoint_schema import check_model_arguments
        from segdemo.models import list_models, model_arguments

        field = f"models[{k}]"
        for key in ("name", "model"):
            if key not in entry:
                raise self.error(field, f"needs a {key}")
        name = self.text(f"{field}.name", entry["name"], name=True)
        model = self.text(f"{field}.model", entry["model"])
        if model not in list_models():
            raise self.error(f"{field}.model", f"must be one of {', '.join(list_models())}, "
                                               f"got {_shown(model)}")  # fmt: skip
        kwargs = entry.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise self.error(f"{field}.kwargs", f"must be a table, got {_shown(kwargs)}")
        unknown = sorted(set(kwargs) - set(model_arguments(model)))
        if unknown:
            raise self.error(f"{field}.kwargs", f"has {', '.join(unknown)}, which {model} does "
                             f"not take (it takes {', '.join(model_arguments(model))})")  # fmt: skip
        try:
            check_model_arguments(model, kwargs, name=lambda key: f"{field}.kwargs.{key}")
        except ValueError as e:
            raise ValueError(f"{self.path}: {e}") from None
        description = self.text(f"{field}.description", entry.get("description", ""))
        own = self.train(entry.get("train", {}), f"{field}.train")
        return StudyModel(name, model, dict(kwargs), description, own)

    def claim(self, k: int, entry: dict, names: list[str]) -> dict[str, str]:
        field = f"claims[{k}]"
        if set(entry) != set(CLAIM_KEYS):
            raise self.error(field, f"needs claim, a and b, got {', '.join(entry) or 'nothing'}")
        claim = {key: self.text(f"{field}.{key}", entry[key]) for key in CLAIM_KEYS}
        for side in ("a", "b"):
            model, *setting = claim[side].split(":")
            valid = model in names and (
                not setting
                or (len(setting) <= 2 and setting[0] in ("fast", "accurate")
                    and (len(setting) == 1 or setting[1].isdigit()))
            )  # fmt: skip
            if not valid:
                raise self.error(f"{field}.{side}", f"must be one of the models {names}, or "
                                 f"MODEL:fast|accurate:LEVEL, got {_shown(claim[side])}")  # fmt: skip
        return claim


def load_study(path: str | Path) -> Study:
    """Read and check a study file.

    Raises:
        ValueError: unreadable TOML, a missing or unknown key, a value of the wrong type or
            out of range, a name that is not a plain folder name, a duplicate model name,
            an unknown model or model argument, or a shared setting that a study sets per
            run (the message names the file and the key).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"study file {path} is a folder, not a TOML file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"study file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path} is not a readable TOML study file: {exc}") from None
    check = _StudyFile(path)
    check.table("the study", raw, STUDY_KEYS)
    for key in ("name", "seeds", "models"):
        if key not in raw:
            raise check.error("the study", f"needs a {key!r}")
    name = check.text("name", raw["name"], name=True)
    seeds = check.seeds(raw["seeds"])
    train = check.train(raw.get("train", {}))
    entries = check.tables("models", raw["models"], MODEL_KEYS)
    if not entries:
        raise check.error("models", "must list at least one model ([[models]])")
    models = [check.model(k, entry) for k, entry in enumerate(entries)]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise check.error("models", f"must have different names, got {names}")
    reference = check.text("reference", raw.get("reference", ""))
    if reference and reference not in names:
        raise check.error("reference", f"must be one of the models {names}, got {reference!r}")
    claims = [
        check.claim(k, entry, names)
        for k, entry in enumerate(check.tables("claims", raw.get("claims", []), CLAIM_KEYS))
    ]
    study = Study(
        name=name,
        seeds=seeds,
        models=tuple(models),
        train=train,
        description=check.text("description", raw.get("description", "")),
        reference=reference,
        claims=tuple(claims),
        path=path,
    )
    for model in models:  # the settings together (a MIN above MAX, a label set, the device)
        try:
            study.config("synthetic", "runs", model, seeds[0])
        except ValueError as e:
            raise ValueError(f"{path}: model {model.name!r}: {e}") from None
    return study


def run_state(run_dir: str | Path) -> str:
    """``"finished"``, ``"started"`` (a checkpoint to resume from) or ``"new"``."""
    run_dir = Path(run_dir)
    events = read_progress(run_dir)
    ends = [e for e in events if e.get("event") == "end"]
    if ends and ends[-1].get("status") == "finished":
        return "finished"
    return "started" if (run_dir / "last.safetensors").is_file() else "new"


def run_study(
    study: Study, data: str, out: str | Path, callbacks=(), announce=print
) -> dict[str, Any]:
    """Train every (model, seed) of ``study`` that is not finished yet, one at a time.

    Returns:
        ``{"status": "finished" | "stopped", "runs": [{"model", "seed", "state", "dir"}]}``
        with every run's state at the end.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stop_file = out / STOP_FILE
    status = "finished"
    for model, seed in study.runs():
        run_dir = study.run_dir(out, model.name, seed)
        state = run_state(run_dir)
        if state == "finished":
            continue
        if stop_file.exists():
            status = "stopped"
            announce(f"{stop_file} exists: not starting {model.name} seed {seed}")
            break
        announce(f"{'resuming' if state == 'started' else 'starting'} {model.name} seed {seed}")
        config = study.config(data, out, model, seed)
        result = fit(
            config, callbacks=callbacks, resume=state == "started", stop_files=(stop_file,)
        )
        if result["status"] != "finished":
            status = "stopped"
            break
    runs = [
        {
            "model": model.name,
            "seed": seed,
            "state": run_state(study.run_dir(out, model.name, seed)),
            "dir": str(study.run_dir(out, model.name, seed)),
        }
        for model, seed in study.runs()
    ]
    return {"status": status, "runs": runs}
