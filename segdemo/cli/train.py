"""``python -m segdemo train``: the training command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from segdemo.config import add_train_arguments, int_in
from segdemo.files import RUN_LOCK_FD_ENV, check_output_folder, run_lock_holder


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class _ConsoleProgress:
    """tqdm bar over steps and one summary line per epoch."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "start":
            print(
                f"training on {event['device']}: {event['train_images']} train / "
                f"{event['val_images']} val images, {event['steps_per_epoch']} steps per epoch",
                flush=True,
            )
            self.bar = tqdm(total=event["total_steps"], initial=event["step"], unit="step")
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(
                epoch=event["epoch"] + 1,
                loss=f"{event['loss']:.3f}",
                lr=f"{event['lr']:.2e}",
                img_s=f"{event['images_per_s']:.1f}",
            )
        elif kind == "epoch":
            line = (
                f"epoch {event['epoch']}/{event['epochs']}: train loss {_number(event['train_loss'])}, "
                f"val mIoU {event['val_miou']:.4f}, pixel acc {event['val_pixel_accuracy']:.4f}, "
                f"{event['epoch_time_s']:.0f}s (data overhead x{event['data_overhead_ratio']:.2f}, "
                f"eval {event['eval_time_s']:.0f}s), best {event['best_miou']:.4f}"
            )
            (self.bar.write if self.bar is not None else print)(line)
        elif kind in ("stopped", "end", "failed") and self.bar is not None:
            self.bar.close()
            self.bar = None
            if kind == "stopped":
                print(f"stopped ({event['reason']}) at step {event['step']}; --resume continues")


def _check_out_is_free(out: str) -> None:
    """Refuse a file or a folder another trainer holds before loading anything heavy
    (``fit`` checks again under the lock)."""
    check_output_folder(out)
    launched_with_lock = RUN_LOCK_FD_ENV in os.environ  # segdemo.runs holds it for us
    if int(os.environ.get("RANK", "0")) == 0 and not launched_with_lock:
        holder = run_lock_holder(out)
        if holder is not None:
            raise ValueError(
                f"{out} is in use by a training process ({holder}); wait for it to end or "
                "give another --out"
            )


def cmd_train(args) -> int:
    from segdemo.config import TrainConfig, values_from_arguments

    values = values_from_arguments(vars(args))
    values.setdefault("out", str(Path("runs") / values.get("model", TrainConfig.model)))
    _check_out_is_free(values["out"])

    from segdemo.checkpoints import CheckpointError, read_metadata
    from segdemo.train import fit

    if args.resume:
        last = Path(values["out"]) / "last.safetensors"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        saved = read_metadata(last).get("train_config")
        if saved is None:
            raise CheckpointError(f"cannot resume: {last} is not a training checkpoint")
        # What was typed overrides the saved run; fit refuses a change of what defines it.
        for merged in ("model_kwargs", "data_options"):
            if merged in values:
                values[merged] = {**saved.get(merged, {}), **values[merged]}
        values = {**saved, **values}
    config = TrainConfig.from_dict(values)
    callbacks = [] if args.quiet else [_ConsoleProgress()]
    result = fit(config, callbacks=callbacks, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary, not one per rank
        if not result["validated"]:
            print(
                f"{result['status']} at step {result['step']} before its first validation: "
                "no validated checkpoint yet (last.safetensors can resume it)"
            )
        print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- study


def cmd_study(args) -> int:
    from segdemo.study import load_study, run_study

    check_output_folder(args.out)
    if args.report:
        check_output_folder(args.report, "--report")
    study = load_study(args.study)
    if args.report:
        from segdemo.study_report import write_study_report

        report = write_study_report(
            study, args.out, args.report, data=args.data, max_items=args.max_items
        )
        print(f"wrote {report['written']} to {args.report}")
        return 0
    if not args.data:
        raise ValueError("training a study needs --data (the dataset folder)")
    callbacks = [] if args.quiet else [_ConsoleProgress()]
    result = run_study(study, args.data, args.out, callbacks=callbacks)
    done = sum(run["state"] == "finished" for run in result["runs"])
    print(f"study {study.name}: {result['status']}, {done}/{len(result['runs'])} runs finished")
    return 0


def add_study_parser(sub) -> None:
    st = sub.add_parser(
        "study",
        help="train every model x seed of a study file, or report on its finished runs",
        description="Train every (model, seed) of a study (TOML) one at a time, skipping "
        "finished runs and resuming stopped ones; with --report, evaluate the finished runs "
        "on the val split and write tables, figures and study.json.",
    )
    st.add_argument("study", help="study file, e.g. studies/unet_vs_unetpp.toml")
    st.add_argument("--data", help="dataset folder (default for --report: each run's own)")
    st.add_argument("--out", required=True, help="folder of the study's runs")
    st.add_argument("--report", metavar="DIR", help="write the report to DIR instead of training")
    st.add_argument(
        "--max-items", type=int_in(1), help="--report: evaluate on the first N val images"
    )
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_study)


def add_parsers(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model; checkpoints land in --out",
        description="Train a model. Unset options take the TrainConfig defaults shown.",
        argument_default=argparse.SUPPRESS,
    )
    add_train_arguments(train)
    train.add_argument("--resume", action="store_true", default=False,
                       help="continue from --out/last.safetensors")  # fmt: skip
    train.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    train.set_defaults(func=cmd_train)
    add_study_parser(sub)
