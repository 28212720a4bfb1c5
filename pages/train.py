"""Train: start a run in its own process and follow it live.

Runs are found by listing the runs folder, never from session state: closing the tab or
reloading the page neither stops nor loses a run, and every browser sees the same runs.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from segdemo import charts, runs
from segdemo.config import MODEL_FLAGS, TrainConfig
from segdemo.labels import list_label_sets
from segdemo.models import get_model_config, list_models
from segdemo_app import common, train_form
from segdemo_app.dataset_picker import dataset_picker

common.init_state()

# Defaults that make a useful model in about a minute on the synthetic set on a 2-core CPU
# (road, sky, building, sidewalk and vegetation segmented; val mIoU ~0.2, pixel accuracy
# ~0.8). Synthetic scenes train without augmentation: drawn directly at the training size
# they cost a third of an augmented (rendered, cropped, jittered) one, and every scene is
# new anyway. Folders train with augmentation.
DEFAULTS = {
    "model": "unet",
    "base_width": 8,
    "size": "64x128",
    "epochs": 4,
    "batch": 8,
    "synthetic_length": 256,
    "val_max_items": 32,
    "lr": 3e-3,
}
SIZES = ["32x64", "64x128", "96x192", "128x256", "256x256", "256x512"]
ENCODERS = [
    "resnet18", "resnet34", "mobilenet_v2", "efficientnet-b0", "timm-tf_efficientnet_lite0",
    "timm-tf_efficientnet_lite1", "timm-tf_efficientnet_lite2",
]  # fmt: skip
STATUS_ICONS = {
    "starting": ":material/hourglass_top:",
    "running": ":material/directions_run:",
    "stopping": ":material/pending:",
    "finished": ":material/check_circle:",
    "stopped": ":material/stop_circle:",
    "failed": ":material/error:",
    "dead": ":material/heart_broken:",
}
POLL_S = 2

st.title("Train")
st.caption(
    "Training runs in a separate process that keeps going when you close the tab; come back "
    "to this page to follow it. A finished run's checkpoints appear on the other pages."
)

runs_dir = Path(common.RUNS_DIR)
all_runs = runs.list_runs(runs_dir)
active = [run for run in all_runs if run.active]

# --------------------------------------------------------------------------- new run

with st.expander("New run", expanded=not active):
    choice = dataset_picker("train", with_split=False)
    left, right = st.columns(2)
    label_set = left.selectbox(
        train_form.label("label_set"), list_label_sets(), key="train_label_set",
        index=list_label_sets().index(TrainConfig.label_set),
        help=train_form.FIELDS["label_set"].metadata["help"],
    )  # fmt: skip
    models = list_models()
    model = right.selectbox(
        "Model", models, index=models.index(DEFAULTS["model"]), key="train_model",
        format_func=lambda name: f"{name}: {get_model_config(name).description}",
    )  # fmt: skip
    model_config = get_model_config(model)
    model_kwargs: dict = {}
    if model_config.width_argument:
        model_kwargs[model_config.width_argument] = int(
            left.number_input("Base width", 2, 64, DEFAULTS["base_width"], key="train_base_width",
                              help=MODEL_FLAGS["base_width"][1])
        )  # fmt: skip
    else:
        model_kwargs["encoder"] = left.selectbox("Encoder", ENCODERS, key="train_encoder")
        weights = right.selectbox(
            "Encoder weights",
            ["none", "imagenet"],
            key="train_encoder_weights",
            help="ImageNet weights are used when installed or cached on this machine (or "
            "downloadable); otherwise the encoder starts from random weights, with a warning in "
            "the log.",
        )
        model_kwargs["encoder_weights"] = None if weights == "none" else weights
    size = left.selectbox(train_form.label("size"), SIZES, index=SIZES.index(DEFAULTS["size"]),
                          key="train_size", help=train_form.FIELDS["size"].metadata["help"])  # fmt: skip
    values = {
        "epochs": train_form.setting_input("epochs", right, value=DEFAULTS["epochs"], min_value=1),
        "batch_size": train_form.setting_input(
            "batch_size", left, value=DEFAULTS["batch"], min_value=1
        ),  # fmt: skip
        "lr": train_form.setting_input("lr", right, value=DEFAULTS["lr"]),
    }
    synthetic = choice is not None and choice.is_synthetic
    with st.popover("More settings"):
        length = st.number_input(
            "Synthetic images per split",
            8,
            100_000,
            DEFAULTS["synthetic_length"],
            key="train_synthetic_length",
            disabled=not synthetic,
        )
        augment = st.checkbox(
            "Augment (flips, random crops, colour changes)",
            value=not synthetic,
            # One key per source, so each keeps its own default.
            key="train_augment_synthetic" if synthetic else "train_augment_folder",
        )
        shown = {"label_set", "model", "size", "augment", *values}
        form_errors = []
        for name in train_form.remaining(shown):
            start = DEFAULTS["val_max_items"] if name == "val_max_items" else None
            try:
                values[name] = train_form.setting_input(name, st, value=start)
            except ValueError as e:
                form_errors.append(str(e))
    start_anyway = False
    if active:
        names = ", ".join(run.run_id for run in active)
        st.warning(f"A run is already training ({names}); a second one shares this machine.")
        start_anyway = st.checkbox("Start anyway", key="train_start_anyway")
    if st.button(
        "Start training",
        type="primary",
        key="train_start",
        disabled=choice is None or (bool(active) and not start_anyway),
    ):
        h, w = (int(v) for v in size.split("x"))
        try:
            if form_errors:
                raise ValueError(form_errors[0])
            config = TrainConfig(
                data=choice.data,
                data_format=choice.fmt,
                label_set=label_set,
                data_options={"length": int(length)} if choice.is_synthetic else {},
                model=model,
                model_kwargs=model_kwargs,
                size=(h, w),
                augment=augment,
                **values,
            )
            started = runs.start_run(config, runs_dir, allow_parallel=start_anyway)
        except runs.RunAlreadyActive as e:
            st.warning(common.literal_markdown(str(e)))
        except ValueError as e:
            st.error(common.literal_markdown(str(e)))
        else:
            st.session_state["train_selected"] = started.run_id  # follow the new run
            st.rerun()

# --------------------------------------------------------------------------- runs


def run_label(run: runs.RunInfo) -> str:
    # No status here: this list is drawn once per page run, the panel below is live.
    return f"{run.run_id} · {run.model or '?'}"


def runs_table(listed: list[runs.RunInfo]) -> None:
    rows = []
    for run in listed:
        s = run.summary
        rows.append(
            {
                "run": run.run_id,
                "status": run.status,
                "model": run.model,
                "epoch": f"{s['epoch']}/{s['epochs'] or '?'}",
                "best mIoU": (
                    f"{run.best_miou:.3f}" if run.best_miou is not None else "not validated yet"
                ),
                "started": time.strftime("%m-%d %H:%M", time.localtime(run.created or 0)),
                "best checkpoint": run.best_checkpoint.name if run.best_checkpoint else "",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def follow_run(run_dir: Path, was_active: bool) -> None:
    """Everything about one run, refreshed from its files (every POLL_S s while active)."""
    run = runs.get_run(run_dir)
    s = run.summary
    st.markdown(f"{STATUS_ICONS.get(run.status, '')} **{run.run_id}** — {run.status}")
    if run.command:
        st.code(shlex.join(run.command), language="bash", wrap_lines=True)  # pasteable
    if run.error:
        st.error(common.literal_markdown(run.error))
    if run.hint:
        st.info(run.hint)
    if s["total_steps"]:
        eta = f" · ETA {runs.format_duration(s['eta_s'])}" if run.active else ""
        st.progress(
            s["fraction"],
            text=f"step {s['step']}/{s['total_steps']} · epoch {s['epoch']}/{s['epochs']}{eta}",
        )
    elif run.active:
        st.progress(0.0, text="starting (loading data and model)…")
    cols = st.columns(4)
    cols[0].metric("Loss", f"{s['last_loss']:.3f}" if s["last_loss"] is not None else "–")
    cols[1].metric("Best val mIoU", f"{s['best_miou']:.3f}" if s["best_miou"] is not None else "–")
    cols[2].metric("Images/s", f"{s['images_per_s']:.1f}" if s["images_per_s"] else "–")
    cols[3].metric("Elapsed", runs.format_duration(s["elapsed_s"]))
    if s["loss_curve"]["step"] or s["val_curve"]["epoch"]:
        st.plotly_chart(
            charts.training_curves(s["loss_curve"], s["val_curve"]),
            key=f"train_curves_{run.run_id}",
        )
    if not s["val_curve"]["epoch"] and s["step"]:
        st.caption(
            "No validation yet: the first one comes at the end of epoch 1, and until then the "
            "run has no checkpoint to segment with."
        )
    if s["per_level_miou"]:
        st.caption("Validation mIoU per U-Net++ pruning level (last epoch)")
        st.dataframe(pd.DataFrame(s["per_level_miou"]).T.rename(columns=lambda k: f"L{k}"))
    buttons = st.columns(3)
    if run.active and buttons[0].button(
        "Stop", key=f"train_stop_{run.run_id}", icon=":material/stop:",
        disabled=run.status == "stopping",
        help="Ends after the current step and writes last.safetensors (resumable).",
    ):  # fmt: skip
        runs.stop_run(run.path)
        st.rerun()  # the whole page: the run now shows as stopping
    if (
        run.status in ("stopped", "dead")
        and run.last_checkpoint
        and buttons[0].button(
            "Resume", key=f"train_resume_{run.run_id}", icon=":material/play_arrow:"
        )
    ):
        try:
            runs.resume_run(
                run.path, allow_parallel=st.session_state.get("train_start_anyway", False)
            )
        except (runs.RunAlreadyActive, FileNotFoundError) as e:
            st.warning(common.literal_markdown(str(e)))
        else:
            st.rerun()
    if run.best_checkpoint is not None:
        st.success(
            f"Best checkpoint: `{run.best_checkpoint}` — listed on the Segment and Compare pages."
        )
    with st.expander("Log"):
        log = run.path / runs.LOG_FILE
        text = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
        st.code(text or "(empty)", language="text")
    with st.expander("All runs", expanded=True):
        runs_table(runs.list_runs(run_dir.parent))
    if was_active and not run.active:
        st.rerun()  # the whole page: the run list, checkpoints and sidebar change


if not all_runs:
    st.info("No runs yet. The defaults train a small U-Net on synthetic scenes in about a minute.")
    st.stop()

st.subheader("Runs")
by_id = {run.run_id: run for run in all_runs}
if st.session_state.get("train_selected") not in by_id:  # first visit, or the run was deleted
    st.session_state["train_selected"] = (active[0] if active else all_runs[0]).run_id
selected = st.selectbox(
    "Run", list(by_id), format_func=lambda i: run_label(by_id[i]), key="train_selected"
)
current = by_id[selected]
poll = POLL_S if any(run.active for run in all_runs) else None
st.fragment(run_every=poll)(follow_run)(current.path, current.active)
