"""Compare's Study view: a study report (``study.json``, written by ``python -m segdemo study
... --report``) as the verdict, the spread over seeds, the paired differences and the
U-Net++ level trade-off."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from segdemo import charts, runs
from segdemo.stats import spread_over, spread_text
from segdemo_app.common import literal_markdown

# The reports that ship with segdemo (docs/study/<study>/study.json), or $SEGDEMO_STUDIES.
BUNDLED_STUDIES = Path(__file__).resolve().parents[1] / "docs" / "study"


def study_files() -> list[Path]:
    folder = Path(os.environ.get("SEGDEMO_STUDIES") or BUNDLED_STUDIES)
    return sorted(folder.glob("*/study.json")) if folder.is_dir() else []


# The fields the view reads, with their JSON types: a report without them is refused
# with one sentence instead of breaking the page halfway.
REQUIRED_FIELDS = {"description": str, "seeds": list, "models": list, "entries": list,
                   "differences": list, "claims": list, "levels": list}  # fmt: skip


class StudyError(ValueError):
    """A study report the view cannot show; the message is one sentence naming it."""


@st.cache_data(show_spinner=False, max_entries=8)
def load_study(path: str, mtime_ns: int) -> dict:
    """The report at ``path`` (cached per version).

    Raises:
        StudyError: unreadable, not JSON, or missing a field the view reads.
    """
    name = f"{Path(path).parent.name}/study.json"
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise StudyError(f"{name} cannot be read as a study report ({type(e).__name__})") from e
    if not isinstance(result, dict):
        raise StudyError(f"{name} is not a study report (it holds no JSON object)")
    for key, kind in REQUIRED_FIELDS.items():
        if not isinstance(result.get(key), kind):
            raise StudyError(f"{name} is not a complete study report (no valid '{key}')")
    return result


def try_load_study(path: Path) -> tuple[dict | None, str | None]:
    """``(report, None)``, or ``(None, the sentence saying why it cannot be shown)``."""
    try:
        return load_study(str(path), path.stat().st_mtime_ns), None
    except (OSError, StudyError) as e:
        return None, str(e) if isinstance(e, StudyError) else f"{path} cannot be read"


def _spread(value: float | None, std: float | None) -> list[float] | None:
    if value is None or std is None:
        return None
    return [value - std, value + std]


def verdict(result: dict) -> list[str]:
    """The study's sentences: every model against the reference, then the claims."""
    lines = [d["sentence"] for d in result["differences"]]
    lines += [f"{c['claim']}? {c['sentence']}" for c in result["claims"]]
    return lines


def headline(result: dict) -> str:
    """The one-sentence verdict: the model with the highest mean mIoU (and, in a road study,
    its road IoU) and how it compares with the reference."""
    best = max(result["entries"], key=lambda e: e["miou"])
    text = f"{best['name']} has the highest mean val mIoU ({_pm(best, 'miou')}"
    if result.get("label_set") == "road" and best.get("road_iou") is not None:
        text += f"; road IoU {_pm(best, 'road_iou')}"
    text += ")"
    diff = next((d for d in result["differences"] if d["a"] == best["name"]), None)
    return text + (f": {diff['sentence']}." if diff else ".")


def _pm(entry: dict, key: str) -> str:
    return spread_text(entry.get(key), entry.get(f"{key}_std"))


def _table_rows(entries: list[dict], label_set: str | None) -> list[dict]:
    """One row per model: mean ± std over seeds (road IoU and F1 too for a road study),
    size and speed."""
    road = label_set == "road"
    return [
        {
            "model": e["name"],
            "val mIoU": _pm(e, "miou"),
            **({"road IoU": _pm(e, "road_iou"), "road F1": _pm(e, "road_f1")} if road else {}),
            "parameters (M)": round(e.get("params", 0) / 1e6, 2),
            "GFLOPs": round(e.get("gflops", 0), 2),
            "latency (ms)": round(e.get("latency_ms", 0), 1),
        }
        for e in entries
    ]


def _runs(path: Path) -> int:
    result, _ = try_load_study(path)
    runs_ = (result or {}).get("runs")
    return len(runs_) if isinstance(runs_, list) else 0


def render() -> None:
    # the study with the most runs first (for the bundled reports: the 19-class one)
    files = sorted(study_files(), key=lambda p: (-_runs(p), p.parent.name))
    if not files:
        st.info("No study report found (docs/study/*/study.json); see docs/study.md.")
        return
    path = st.selectbox(
        "Study", files, format_func=lambda p: p.parent.name, key="compare_study",
        help="Reports written by python -m segdemo study STUDY.toml --out DIR --report docs/study",
    )  # fmt: skip
    result, problem = try_load_study(path)
    if result is None:
        st.error(literal_markdown(problem), icon=":material/error:")
        return
    try:
        render_study(result)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # A report whose values have the wrong shapes: one sentence, not a traceback.
        st.error(
            literal_markdown(
                f"{path.parent.name}/study.json holds values the Study view cannot show "
                f"({type(e).__name__}: {e}); rewrite it with python -m segdemo study --report"
            ),
            icon=":material/error:",
        )


def render_study(result: dict) -> None:
    """The verdict, table and charts of one study report."""
    seeds = len(result["seeds"])
    st.markdown(f"**{literal_markdown(result['description'])}**")
    st.caption(
        f"{len(result['models'])} models x {seeds} seeds, trained the same way, scored with "
        f"their final weights on {result['images']} val images; spread = std over seeds, "
        "differences paired on the same images (95% bootstrap interval over the images, "
        "seeds averaged)."
    )
    st.success(literal_markdown(headline(result)))  # the report's text is data, not Markdown
    with st.expander("Every comparison in words", expanded=False):
        for line in verdict(result):
            st.markdown(f"- {literal_markdown(line)}.")

    entries = result["entries"]
    st.dataframe(pd.DataFrame(_table_rows(entries, result.get("label_set"))), hide_index=True)
    timing = result.get("training_time")
    if timing:
        st.caption(
            f"Training: {runs.format_duration(timing['total_s'])} for all {len(result['runs'])} "
            "runs (wall clock, evaluation included); per run: "
            + ", ".join(
                f"{name} {runs.format_duration(t['mean_s'])}"
                for name, t in timing["models"].items()
            )
        )
    models = [{"name": e["name"], "miou": e["miou"],
               "miou_ci95": _spread(e["miou"], e["miou_std"])} for e in entries]  # fmt: skip
    st.plotly_chart(
        charts.miou_intervals(models, title=f"val mIoU, {spread_over(result)}"),
        key="study_miou",
    )
    if result["differences"]:
        comparisons = [{**d, "name": d["a"], "reference": d["b"]} for d in result["differences"]]
        st.plotly_chart(
            charts.paired_differences(
                comparisons,
                title=f"Difference from {result['reference']}, mean over seeds "
                "(95% interval over the images)",
            ),
            key="study_differences",
        )
    levels = [
        {**row, "miou_ci95": _spread(row["miou"], row["miou_std"])}
        for row in result["levels"]
        if row["mode"] is not None and "latency_ms" in row
    ]
    if levels:
        st.plotly_chart(
            charts.pruning_tradeoff(
                levels, title=f"U-Net++ levels: mIoU ({spread_over(result)}) vs latency"
            ),
            key="study_levels",
        )
