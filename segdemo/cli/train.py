"""``python -m segdemo train``: the training command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from segdemo.cli.types import model_arg, size

# Arguments that may change when a run is resumed; all others define the run itself.
_CONTINUATION_FIELDS = (
    "epochs", "max_steps", "device", "precision", "workers", "out", "log_every", "val_max_items",
)  # fmt: skip
_ARG_TO_FIELD = {"format": "data_format", "batch": "batch_size"}


def _train_config_values(args) -> dict:
    """TrainConfig fields from the arguments the user actually typed (others are absent)."""
    given = vars(args)
    values: dict = {}
    model_kwargs = dict(given.get("model_arg") or [])
    for key in ("base_width", "encoder", "deep_supervision"):
        if key in given:
            model_kwargs[key] = given[key]
    if "encoder_weights" in given:
        model_kwargs["encoder_weights"] = (
            None if given["encoder_weights"] == "none" else given["encoder_weights"]
        )
    if model_kwargs:
        values["model_kwargs"] = model_kwargs
    if "synthetic_length" in given:
        values["data_options"] = {"length": given["synthetic_length"]}
    if given.get("no_augment"):
        values["augment"] = False
    for key in (
        "data", "format", "label_set", "model", "epochs", "max_steps", "size", "batch", "lr",
        "weight_decay", "schedule", "warmup_steps", "loss", "seed", "device", "precision",
        "workers", "out", "log_every", "val_max_items",
    ):  # fmt: skip
        if key in given:
            values[_ARG_TO_FIELD.get(key, key)] = given[key]
    return values


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
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
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


def cmd_train(args) -> int:
    from segdemo.checkpoints import read_metadata
    from segdemo.train import TrainConfig, fit

    values = _train_config_values(args)
    values.setdefault("out", str(Path("runs") / values.get("model", TrainConfig.model)))
    if args.resume:
        last = Path(values["out"]) / "last.safetensors"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        saved = read_metadata(last)["train_config"]
        changed = [
            f"--{k.replace('_', '-')}"
            for k, v in values.items()
            if k not in _CONTINUATION_FIELDS and json.dumps(v) != json.dumps(saved.get(k))
        ]
        if changed:
            raise ValueError(
                f"cannot resume {values['out']} with other settings ({', '.join(changed)}); "
                "a resumed run keeps its data, model and schedule"
            )
        values = {**saved, **values}
    config = TrainConfig.from_dict(values)
    callbacks = [] if args.quiet else [_ConsoleProgress()]
    result = fit(config, callbacks=callbacks, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary line, not one per rank
        print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- study


def cmd_study(args) -> int:
    from segdemo.study import load_study, run_study

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
    st.add_argument("--max-items", type=int, help="--report: evaluate on the first N val images")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_study)


def add_parsers(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model; checkpoints land in --out",
        description="Train a model. Unset options take the TrainConfig defaults shown.",
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--data", help="dataset folder or 'synthetic' (default)")
    train.add_argument("--format", help="dataset format (default: detect)")
    train.add_argument("--label-set", help="cityscapes19 (default) or road")
    train.add_argument("--model", help="unet (default), unetpp, unetpp_ds, smp_unet, smp_unetpp")
    train.add_argument("--base-width", type=int, help="scratch models: channels at level 0")
    train.add_argument("--encoder", help="smp models: encoder name, e.g. resnet18")
    train.add_argument("--encoder-weights", choices=["imagenet", "none"], help="smp encoders")
    ds = train.add_mutually_exclusive_group()
    ds.add_argument("--deep-supervision", dest="deep_supervision", action="store_true")
    ds.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_false")
    train.add_argument("--model-arg", type=model_arg, action="append", metavar="KEY=VALUE",
                       help="any other model keyword argument (repeatable)")  # fmt: skip
    train.add_argument("--epochs", type=int, help="default 10")
    train.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    train.add_argument("--size", type=size, help="HxW, e.g. 256x256 (default 128x256)")
    train.add_argument("--batch", type=int, help="default 8")
    train.add_argument("--lr", type=float, help="AdamW learning rate (default 2e-3)")
    train.add_argument("--weight-decay", type=float, help="default 1e-4")
    train.add_argument("--schedule", choices=["poly", "cosine"], help="default poly")
    train.add_argument("--warmup-steps", type=int, help="default 100")
    train.add_argument("--loss", choices=["ce", "dice", "ce_dice"], help="default ce_dice")
    train.add_argument("--no-augment", action="store_true", help="turn off flips/crops/jitter")
    train.add_argument("--seed", type=int, help="default 0")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="default auto")
    train.add_argument("--workers", type=int, help="DataLoader worker processes (default 1)")
    train.add_argument("--out", help="run folder (default runs/<model>)")
    train.add_argument("--resume", action="store_true", default=False,
                       help="continue from --out/last.safetensors")  # fmt: skip
    train.add_argument("--log-every", type=int, help="steps between progress events (default 10)")
    train.add_argument("--val-max-items", type=int, help="evaluate on the first N val images")
    train.add_argument("--synthetic-length", type=int, help="images in the synthetic train split")
    train.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    train.set_defaults(func=cmd_train)
    add_study_parser(sub)
