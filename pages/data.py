"""Data: what a dataset folder holds, as the loaders see it, before training on it.

File names come from the dataset folder: problems and paths are shown as text, never as
Markdown.
"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from segdemo import charts
from segdemo.labels import list_label_sets
from segdemo.viz import colorize, legend_entries, overlay
from segdemo_app import common
from segdemo_app import data as ui
from segdemo_app.common import literal_markdown
from segdemo_app.dataset_picker import dataset_picker

common.init_state()

st.title("Data")
st.caption(
    "Browse a dataset as the training and evaluation loaders read it: detected format, "
    "split sizes, problems, images with their masks, and how often each class occurs."
)

choice = dataset_picker("data")
label_sets = list_label_sets()
label_set = st.selectbox(
    "Label set", label_sets, index=label_sets.index("cityscapes19"), key="data_label_set"
)
if choice is None:
    st.stop()

try:
    report = ui.inspect(choice.data, choice.fmt, label_set)
    dataset = ui.open_browse_dataset(choice.data, report["format"], choice.split, label_set)
except ValueError as e:
    st.error(literal_markdown(str(e)))
    st.stop()

cols = st.columns(2 + len(report["splits"]))
cols[0].metric("Format", report["format"])
cols[1].metric(f"Classes ({report['label_set']})", report["num_classes"])
for col, (split, info) in zip(cols[2:], report["splits"].items(), strict=True):
    col.metric(f"{split} images", info["count"])
sizes = {
    split: ", ".join(f"{size} ({n})" for size, n in info.get("image_sizes", {}).items())
    for split, info in report["splits"].items()
}
st.caption("Image sizes: " + "; ".join(f"{split}: {text or '?'}" for split, text in sizes.items()))
problems = report["problems"] + [p for p in dataset.problems if p not in report["problems"]]
if problems:
    with st.expander(f"{len(problems)} problem(s) reported by the loader", expanded=True):
        st.text("\n".join(f"- {p}" for p in problems))
else:
    st.success("The loader reported no problems.")

if len(dataset) == 0:
    st.warning(f"The {choice.split} split is empty.")
    st.stop()

st.subheader(f"Images ({choice.split})")
view = st.radio("View", ["One image", "Grid"], horizontal=True, key="data_view")
left, right = st.columns([1, 3])
index = int(left.number_input("Index", 0, len(dataset) - 1, 0, key="data_index"))
alpha = right.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="data_alpha")
if view == "One image":
    try:
        image, mask = dataset.read_raw(index)
    except ValueError as e:
        st.error(literal_markdown(str(e)))
    else:
        st.text(dataset.item_path(index))
        columns = st.columns(3)
        columns[0].image(image, caption="image")
        columns[1].image(colorize(mask, dataset.label_set), caption="mask")
        columns[2].image(overlay(image, mask, dataset.label_set, alpha), caption="overlay")
        legend = legend_entries(mask, dataset.label_set)
        st.markdown(
            " ".join(
                f"<span style='background:{e['color']};padding:0 .6em;border:1px solid #555'>"
                f"</span> {html.escape(e['name'])} {100 * e['fraction']:.1f}%"
                for e in legend
            ),
            unsafe_allow_html=True,
        )
else:
    columns = st.columns(3)
    for k, i in enumerate(range(index, min(index + 6, len(dataset)))):
        try:
            image, mask = dataset.read_raw(i)
        except ValueError as e:
            columns[k % 3].error(literal_markdown(str(e)))
            continue
        columns[k % 3].image(overlay(image, mask, dataset.label_set, alpha), caption=f"{i}")

st.subheader("Class frequencies")
max_items = len(dataset)
if len(dataset) > 4:
    max_items = st.slider(
        "Masks to count (evenly spaced over the split)", 4, min(len(dataset), 512),
        min(32, len(dataset)), key="data_freq_items",
    )  # fmt: skip
with st.spinner("Counting pixels…"):
    counts = ui.class_counts(dataset, max_items)
labels = dataset.label_set
st.plotly_chart(
    charts.class_frequency_bars(labels.names, counts, labels.colors,
                                title=f"Pixels per class ({choice.split}, {max_items} masks)"),
    key="data_frequency_chart",
)  # fmt: skip
absent = [name for name, n in zip(labels.names, counts, strict=True) if n == 0]
if absent:
    st.caption(f"Not seen in these masks: {', '.join(absent)}")
with st.expander("Report as JSON"):
    st.json(report)
    st.dataframe(pd.DataFrame(report["splits"]).T)
