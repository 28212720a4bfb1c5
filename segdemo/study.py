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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdemo.config import TrainConfig
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


def load_study(path: str | Path) -> Study:
    """Read and check a study file.

    Raises:
        ValueError: unreadable TOML, a missing or unknown key, a duplicate model name, an
            unknown model, or a shared setting that a study sets per run (the message
            names the file and the key).
    """
    from segdemo.models import list_models, model_arguments

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"study file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path} is not a readable TOML study file: {exc}") from None
    allowed = {"name", "description", "seeds", "train", "models", "reference", "claims"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(allowed)}")
    for key in ("name", "seeds", "models"):
        if key not in raw:
            raise ValueError(f"{path}: the study needs a {key!r}")
    seeds = raw["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    train = _train_settings(raw.get("train", {}), f"{path}: [train]")
    models = []
    for entry in raw["models"]:
        extra = sorted(set(entry) - {"name", "model", "kwargs", "description", "train"})
        if extra:
            raise ValueError(
                f"{path}: a [[models]] entry has unknown key(s) {', '.join(extra)}; allowed: "
                "name, model, kwargs, description, train"
            )
        name, model = entry.get("name"), entry.get("model")
        if not name or not model:
            raise ValueError(f"{path}: every [[models]] entry needs a name and a model")
        if model not in list_models():
            raise ValueError(f"{path}: model {name!r} uses unknown model {model!r}")
        kwargs = dict(entry.get("kwargs", {}))
        unknown = sorted(set(kwargs) - set(model_arguments(model)))
        if unknown:
            raise ValueError(f"{path}: model {name!r}: {model} does not take {unknown}")
        own = _train_settings(entry.get("train", {}), f"{path}: model {name!r}: train")
        models.append(StudyModel(name, model, kwargs, entry.get("description", ""), own))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: model names must be unique, got {names}")
    reference = raw.get("reference", "")
    if reference and reference not in names:
        raise ValueError(f"{path}: reference {reference!r} is not one of the models {names}")
    claims = []
    for claim in raw.get("claims", []):
        if set(claim) != {"claim", "a", "b"}:
            raise ValueError(f"{path}: every [[claims]] entry needs claim, a and b, got {claim}")
        for side in (claim["a"], claim["b"]):
            if side.split(":")[0] not in names:
                raise ValueError(f"{path}: claim {claim['claim']!r} names unknown model {side!r}")
        claims.append(dict(claim))
    study = Study(
        name=raw["name"],
        seeds=tuple(seeds),
        models=tuple(models),
        train=train,
        description=raw.get("description", ""),
        reference=reference,
        claims=tuple(claims),
        path=path,
    )
    for model in models:  # TrainConfig checks the values
        try:
            study.config("synthetic", "runs", model, seeds[0])
        except ValueError as e:
            raise ValueError(f"{path}: model {model.name!r}: {e}") from None
    return study


def _train_settings(table: Any, where: str) -> dict[str, Any]:
    """A table of ``TrainConfig`` fields a study may set (not the per-run ones)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of training settings, got {table!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(k for k in table if k not in known or k in PER_RUN_FIELDS)
    if bad:
        raise ValueError(
            f"{where} cannot set {', '.join(bad)} (each run sets data, model, "
            "model_kwargs, seed and out; other keys must be TrainConfig fields)"
        )
    return dict(table)


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
