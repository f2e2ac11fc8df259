"""bench/bench_recipe.py at a tiny size (a few 4-frame clips, 8 bits, 1-2 steps), so the benchmark cannot rot.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_bench_recipe.py
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_recipe as br  # noqa: E402

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

# stride 1: a 4-frame clip at the shipped stride 2 spans 7 frames, more than these 6-frame videos (one start
# only): the K = 2 clips of a class came out identical (d_pos 0, no active triplet); margin 12 for 8 bits: with the head
# norm the codes start ~0.85 x bits apart
TINY = ["--per-class", "4", "--frames", "6", "--epochs", "1", "--set", "data.num_frames=4", "--set", "data.stride=1",
        "--set", "data.resize=[32,32]", "--set", "data.crop=[32,32]", "--set", "data.pk_classes=2",
        "--set", "data.pk_samples=2", "--set", "train.steps_per_epoch=2", "--set", "model.bits=8",
        "--set", "loss.margin=12.0", "--set", "data.clips_per_video=1", "--set", "data.val_per_class=1"]


def test_c3dhash_bench_recipe_trains_each_variant_in_parallel_and_reports_the_seed_spread(tmp_path):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    cmd = [str(Path(sys.executable).with_name("c3dhash")), "bench", "recipe", "--", "--variants",
           "shipped,shipped-s1", "--jobs", "2", "--work", str(tmp_path / "w"), "--json", str(out), *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["shipped", "shipped-s1"]
    for r in rows:
        assert r["error"] == "" and 0.0 <= r["map_all"] <= 1.0 and r["minutes"] > 0
        assert len(r["epochs"]) == 1 and math.isfinite(r["epochs"][0]["loss"])
        assert (tmp_path / "w" / "runs" / f"{r['variant']}.log").is_file()  # each run's prints, apart
    # same videos (one data set), other init/batch seed: another trajectory
    assert rows[0]["epochs"][0]["loss"] != rows[1]["epochs"][0]["loss"]
    assert len(list((tmp_path / "w" / "data").iterdir())) == 1
    assert "shipped set over 2 seeds: mean" in proc.stdout and "load average at start" in proc.stdout


def test_probe_records_every_step_and_stop_after_validates_without_a_test_figure(tmp_path, capsys):
    res = br.main(["--variants", "c4-d1", "--probe", "--stop-after", "1", "--work", str(tmp_path), *TINY])
    (r,) = res
    assert [row["step"] for row in r.probe] == [1, 2]
    row = r.probe[0]
    assert 0 < row["h_abs"] <= 1 and row["d_pos"] >= 0 and row["d_neg"] >= 0 and row["margin"] == 12.0
    assert row["g:head"] > 0 and row["g:trunk.stem.0"] > 0  # conv and linear weights, not BN's
    assert math.isnan(r.map_all) and 0.0 <= r.epochs[0]["val_map"] <= 1.0
    assert "probe c4-d1: step lr |h|" in capsys.readouterr().out


def test_job_config_lets_the_user_override_win_and_fits_p_to_small_sets(tmp_path):
    setup = br.Setup(epochs=4, overrides=("train.seed=7",))
    cfg = br.job_config(setup, br.BY_NAME["shipped-s2"], tmp_path / "d", tmp_path / "runs" / "x")
    shipped = br.load_config(str(br.CONFIG), []).train
    assert shipped.eval_every == shipped.epochs  # the shipped recipe validates once, at the end: so does a shorter run
    assert (cfg.train.seed, cfg.data.seed, cfg.train.epochs, cfg.train.eval_every) == (7, 2, 4, 4)
    recipe = yaml.safe_load(br.CONFIG.read_text())
    recipe["train"]["eval_every"] = shipped.epochs // 2  # a recipe that validates half-way: 3 of a 6-epoch run
    (tmp_path / "half.yaml").write_text(yaml.safe_dump(recipe))
    half = br.Setup(config=str(tmp_path / "half.yaml"), epochs=6)
    assert br.job_config(half, br.BY_NAME["shipped"], tmp_path / "d", tmp_path / "runs" / "h").train.eval_every == 3
    mine = br.Setup(epochs=6, overrides=("train.eval_every=5",))  # the user's --set wins over the scaling
    assert br.job_config(mine, br.BY_NAME["shipped"], tmp_path / "d", tmp_path / "runs" / "m").train.eval_every == 5
    assert cfg.data.root == str(tmp_path / "d") and cfg.cluster.name == "x"
    small = br.job_config(br.Setup(), br.Variant("c3", classes=3), tmp_path / "d", tmp_path / "runs" / "y")
    assert small.data.pk_classes == 0 and small.train.epochs == shipped.epochs  # every class; the config's schedule
    every = br.Setup(overrides=("data.pk_classes=12",))  # "every class in each batch" across the grid's sets
    assert [br.job_config(every, br.BY_NAME[n], tmp_path / "d", tmp_path / "runs" / n).data.pk_classes
            for n in ("g-c10-32x32-d20-s0", "g-c12-32x32-d20-s0", "shipped")] == [10, 12, 8]


def test_stalled_epochs_and_the_spread_line():
    a = br.Result("shipped", map_all=0.9, epochs=[{"loss": 13.5}, {"loss": 12.0}, {"loss": 3.0}])
    b = br.Result("shipped-s1", map_all=0.8, epochs=[{"loss": 13.0, "val_map": 0.5}])
    assert br.stalled_epochs(a, 14.0) == 1 and br.stalled_epochs(b, 14.0) == 1
    table = br.format_table([a, b], margin=14.0)
    assert "mean 0.8500, min 0.8000, max 0.9000, stdev 0.0707" in table


def test_the_grid_is_the_issues_36_runs_and_shards_split_it_without_overlap():
    names = {v.name for v in br.GRID}
    assert len(names) == 36 == len({(v.classes, v.size, v.data_seed, v.seed) for v in br.GRID})
    assert {v.classes for v in br.GRID} == {10, 12} and len({v.size for v in br.GRID}) == 2
    assert len({v.data_seed for v in br.GRID}) == 3 and {v.seed for v in br.GRID} == {0, 1, 2}
    assert not {v.data_seed for v in br.GRID} & {v.data_seed for v in br.VARIANTS}  # never seen while tuning
    shards = [[v.name for v in br.parse(["--variants", "grid", "--shard", f"{i}/5"])[1]] for i in range(1, 6)]
    assert sorted(sum(shards, [])) == sorted(names)
    assert [v.name for v in br.parse(["--variants", "shipped,grid"])[1]][:2] == ["shipped", "g-c10-48x64-d20-s0"]


def test_the_grid_line_counts_runs_at_the_target():
    rows = [br.Result("g-c10-48x64-d20-s0", map_all=0.9), br.Result("g-c12-32x32-d22-s2", map_all=0.84),
            br.Result("g-c12-32x32-d22-s1", error="RuntimeError: x")]
    table = br.format_table(rows, margin=14.0).splitlines()
    assert table[-1] == "grid: 1 of 3 runs >= 0.85, lowest 0.8400 (g-c12-32x32-d22-s2); 36 in the whole grid"
    end = table[0].index("test mAP@all") + len("test mAP@all")  # the figures sit under their header
    assert table[1].index("0.9000") + 6 == end == table[2].index("0.8400") + 6


@pytest.mark.parametrize("shard", ["0/3", "4/3", "x", "1/0"])
def test_a_bad_shard_is_a_usage_error(shard, capsys):
    with pytest.raises(SystemExit) as exc:
        br.parse(["--shard", shard])
    assert exc.value.code == 2 and "--shard" in capsys.readouterr().err


def test_unknown_variant_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        br.parse(["--variants", "shipped,nope"])
    assert exc.value.code == 2 and "unknown nope" in capsys.readouterr().err


def test_c3dhash_bench_step_times_every_geometry_and_layout_against_the_configs_own(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [str(Path(sys.executable).with_name("c3dhash")), "bench", "step", "--", "--geometry", "2x16", "4x32",
           "--batch", "4", "--repeats", "1", "--set", "data.num_frames=4", "--set", "data.resize=[40,40]",
           "--set", "data.crop=[32,32]", "--set", "model.bits=8"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("threads")]
    assert [(r[2], r[4]) for r in rows] == [("2x16", "off"), ("2x16", "on"), ("4x32", "off"), ("4x32", "on")]
    assert all(float(r[7]) > 0 for r in rows)
    assert rows[2][11] == "1.00x"  # the config's own geometry (channels first, oneDNN on) is the reference
    assert "the config's geometry is 4x32" in proc.stdout and "load average" in proc.stdout
