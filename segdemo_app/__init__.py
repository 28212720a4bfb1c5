"""Streamlit helpers for segdemo's app: shared state, cached loaders and the sidebar."""
