"""The app's frame: router, landing page, sidebar, Streamlit configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from segdemo_app import common

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def test_config_toml():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["headless"] is True
    assert config["server"]["maxUploadSize"] == 50
    assert config["browser"]["gatherUsageStats"] is False
    assert config["theme"]["base"] == "light"


def test_landing_page_is_segment_with_sidebar(app_dirs):
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Segment street photos"
    sidebar = " ".join(t.value for t in at.sidebar.text)  # file names: plain text
    assert "unet (unet)" in sidebar and "unetpp (unetpp)" in sidebar


@pytest.mark.parametrize(
    ("page", "title"),
    [("pages/segment.py", "Segment street photos"), ("pages/checkpoints.py", "Checkpoints")],
)
def test_every_owned_page_renders(app_dirs, page, title):
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    at.switch_page(page).run()
    assert not at.exception
    assert at.title[0].value == title


def test_session_defaults_are_not_shared_between_sessions(app_dirs):
    first = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    second = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    for key, value in common.STATE_DEFAULTS.items():
        if isinstance(value, dict | list):
            assert first.session_state[key] is not second.session_state[key], key
