"""The benchmark on tiny models: row structure, per-level rows and the markdown table."""

from __future__ import annotations

import math
import time

import pytest

from segdemo.bench import (
    BENCH_KEYS,
    format_bench_table,
    interleaved_median_ms,
    median_ms,
    run_bench,
)

TINY = {"unet": {"base_width": 4}, "unetpp": {"base_width": 4}}


def tiny_run(models: list[str]) -> list[dict]:
    return run_bench(
        models, size=(32, 64), batch=2, repeats=1, warmup=1, num_classes=3, model_kwargs=TINY
    )


def test_plain_model_gives_one_row_with_all_keys() -> None:
    seen = []
    rows = run_bench(
        ["unet"],
        size=(32, 64),
        batch=2,
        repeats=2,
        warmup=1,
        num_classes=3,
        model_kwargs=TINY,
        progress=seen.append,
    )
    assert len(rows) == 1 and seen == rows
    row = rows[0]
    assert set(BENCH_KEYS) <= set(row)
    assert (row["model"], row["mode"], row["level"]) == ("unet", None, None)
    assert row["params"] > 0 and row["gflops"] > 0
    for key in ("ms_fp32", "ms_fast", "images_per_s"):
        assert math.isfinite(row[key]) and row[key] > 0
    assert row["precision_fast"] in ("bf16", "fp32")


def test_unetpp_gives_a_row_per_mode_and_level() -> None:
    rows = tiny_run(["unetpp"])
    settings = [(row["mode"], row["level"]) for row in rows]
    assert settings == [("fast", k) for k in (1, 2, 3, 4)] + [("accurate", k) for k in (1, 2, 3, 4)]
    fast = [row for row in rows if row["mode"] == "fast"]
    assert [r["params"] for r in fast] == sorted({r["params"] for r in fast})
    assert [r["gflops"] for r in fast] == sorted({r["gflops"] for r in fast})
    accurate_l4 = rows[-1]
    assert accurate_l4["params"] > fast[-1]["params"]  # three more heads


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['nope'\]; valid models: .*unet"):
        run_bench(["nope"])


def test_median_ms_runs_warmup_then_repeats() -> None:
    calls = []
    value = median_ms(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert value >= 0


def test_interleaved_median_ms_times_each_function_once_per_round() -> None:
    calls = []

    def slow() -> None:
        calls.append("b")
        time.sleep(0.005)

    fast, slow_ms = interleaved_median_ms([lambda: calls.append("a"), slow], repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert 0 <= fast < 5 <= slow_ms


def test_format_bench_table_ratios() -> None:
    common = {"params": 2_000_000, "gflops": 1.5, "images_per_s": 10.0}
    rows = [
        {"model": "unet", "mode": None, "level": None, "ms_fp32": 30.0, "ms_fast": 10.0, **common},
        {"model": "unetpp", "mode": "fast", "level": 1, "ms_fp32": 8.0, "ms_fast": 5.0, **common},
        {"model": "unetpp", "mode": "fast", "level": 4, "ms_fp32": 40.0, "ms_fast": 20.0, **common},
    ]
    lines = format_bench_table(rows).splitlines()
    assert lines[0].startswith("| model | mode | level |")
    assert lines[2] == "| unet | - | - | 2.000 | 1.50 | 30.0 | 10.0 | 3.00 | - | 10.0 |"
    assert lines[3] == "| unetpp | fast | 1 | 2.000 | 1.50 | 8.0 | 5.0 | 1.60 | 0.25 | 10.0 |"
    assert lines[4].split("|")[9].strip() == "1.00"


def test_bench_train_times_a_training_step_and_counts_its_flops():
    from segdemo.bench import bench_train, format_train_table, parse_model_spec

    assert parse_model_spec("unetpp:base_width=4:deep_supervision=false") == (
        "unetpp",
        {"base_width": 4, "deep_supervision": False},
    )
    rows = bench_train(["unet:base_width=4", "unetpp:base_width=4"], size=(32, 32), batch=2,
                       repeats=1, warmup=0)  # fmt: skip
    assert [r["model"] for r in rows] == ["unet:base_width=4", "unetpp:base_width=4"]
    for row in rows:
        assert row["step_s"] > 0 and row["images_per_s"] == pytest.approx(2 / row["step_s"])
        assert row["gflop_per_step"] > 0
    # The nested decoder does more work than the plain one at the same width.
    assert rows[1]["gflop_per_step"] > rows[0]["gflop_per_step"]
    assert "fraction of bf16 peak" in format_train_table(rows)


def test_bench_video_times_every_setting_and_all_models_together(tiny_checkpoints, tmp_path):
    from segdemo.bench import bench_video, format_video_table
    from segdemo.checkpoints import load_checkpoint
    from segdemo.models import pruning_levels
    from segdemo.video import grid_shape, tile_size

    paths = [str(tiny_checkpoints["unet"]), str(tiny_checkpoints["unetpp"])]
    levels = pruning_levels(load_checkpoint(paths[1]).model)
    result = bench_video(paths, seconds=1.0, fps=4.0, size=(48, 96), device="cpu",
                         precision="fp32", workdir=str(tmp_path), rounds=2)  # fmt: skip
    rows = result["rows"]
    # U-Net: its one forward; U-Net++: fast and accurate at every level, opening one first.
    assert [(r["checkpoint"], r["level"]) for r in rows][0] == ("unet", None)
    settings = {(r["mode"], r["level"]) for r in rows[1:]}
    assert settings == {(m, k) for m in ("fast", "accurate") for k in range(1, levels + 1)}
    assert rows[1]["level"] == levels and len(rows) == 1 + 2 * levels
    for row in rows:
        assert row["frames"] == 4 and row["fps"] > 0 and len(row["fps_runs"]) == 2
        assert min(row["fps_runs"]) <= row["fps"] <= max(row["fps_runs"])
        assert row["ms_per_frame"] == pytest.approx(1000 / row["fps"])
    together = result["together"]
    assert together["frames"] == 4 and len(together["fps"]) == 2 and together["wall_s"] > 0
    # The photo and two masks in the video's grid (two rows of two, one cell left dark).
    grid_rows, grid_columns = grid_shape(3)
    tile_h, tile_w = tile_size((48, 96), grid_columns)
    assert (grid_rows, grid_columns) == (2, 2)
    assert (together["height"], together["width"]) == (grid_rows * tile_h, grid_columns * tile_w)
    table = format_video_table(result)
    assert f"| unetpp | fast L{levels} |" in table and "to a playable WebM" in table
    assert list(tmp_path.iterdir()) == []  # the clip and the videos are cleaned up
