"""segdemo: street-scene semantic segmentation studio. Run with ``streamlit run app.py``."""

from __future__ import annotations

import streamlit as st

from segdemo_app import common

st.set_page_config(page_title="segdemo", page_icon="🚦", layout="wide")
common.init_state()

# (file, title, icon); Segment is the landing page.
PAGES = [
    ("pages/segment.py", "Segment", ":material/image_search:"),
    ("pages/compare.py", "Compare", ":material/compare:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/data.py", "Data", ":material/dataset:"),
    ("pages/checkpoints.py", "Checkpoints", ":material/inventory_2:"),
]

page = st.navigation(
    [
        st.Page(path, title=title, icon=icon, default=path == "pages/segment.py")
        for path, title, icon in PAGES
        # A page still being written elsewhere is left out rather than breaking the app.
        if (common.REPO / path).is_file()
    ]
)
common.sidebar()
page.run()
