"""segdemo: street-scene semantic segmentation with U-Net and U-Net++.

The library has no Streamlit import: everything here runs from the CLI, a notebook
or a test. The app in ``app.py`` and ``pages/`` is a thin layer on top.
"""

import os

# albumentations checks PyPI for a newer version on import; segdemo must work offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
