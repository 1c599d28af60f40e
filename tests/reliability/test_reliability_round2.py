"""Issue 13, second round of adversarial inputs: outputs that would overwrite inputs (case 2), typos that locked a
user out of a run folder (case 3), tracebacks and YAML alias bombs (case 4), silent acceptances (case 6).

Every case asserts the exit code, that the message names the offender, and that nothing outside the run or output
folder changed (the ``untouched`` fixture hashes the dataset, the config and sweep files and the current folder
before and after; the run folder a command only reads is hashed too).
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from fixtures.cli import run_cli
from fixtures.hashes import tree_hash

from locbench.cli import main

pytest_plugins = ["fixtures.synth_data"]


# ------------------------------------------------------------------------ case 2: outputs never overwrite inputs


def test_outputs_never_overwrite_inputs(dataset, run_copy, tmp_path, capsys, untouched):
    data_before, run_before = tree_hash(dataset), tree_hash(run_copy)
    predict = ["predict", str(run_copy), "--data", str(dataset), "--device", "cpu", "--workers", "0"]
    refused = {
        # command line: what the message must name
        (*predict, "--out", str(dataset / "train.csv")): "train.csv",
        (*predict, "--out", str(dataset / "new.csv"), "--force"): str(dataset),  # inside the dataset: never
        (*predict, "--out", str(run_copy / "thresholds.json"), "--force"): "thresholds.json",
        ("evaluate", str(run_copy), "--device", "cpu", "--out", str(run_copy / "summary.json")): "summary.json",
        ("explain", str(run_copy), "--out", str(run_copy / "checkpoints"), "--localize", "0"): "checkpoints",
        ("segment", "--data", str(dataset), "--out", str(dataset / "masks")): "masks",
        ("segment", "--data", str(dataset / "train.csv"), "--out", str(dataset / "seg")): str(dataset),
    }
    for args, named in refused.items():
        code, err = run_cli(capsys, list(args))
        assert code == 2 and named in err and "overwrite" in err, (args, err)
    assert tree_hash(dataset) == data_before and tree_hash(run_copy) == run_before

    # an existing output is replaced only with --force; the default places (RUN/eval) keep working
    mine = tmp_path / "mine.csv"
    mine.write_text("my own notes\n")
    code, err = run_cli(capsys, [*predict, "--out", str(mine)])
    assert code == 2 and str(mine) in err and "--force" in err and mine.read_text() == "my own notes\n"
    code, _ = run_cli(capsys, [*predict, "--out", str(mine), "--force"])
    assert code == 0 and mine.read_text().startswith("id,")
    code, _ = run_cli(
        capsys, ["evaluate", str(run_copy), "--device", "cpu", "--out", str(run_copy / "eval" / "v.json")]
    )
    assert code == 0 and (run_copy / "eval" / "v.json").is_file()
    assert tree_hash(dataset) == data_before
    assert {k: v for k, v in tree_hash(run_copy).items() if not k.startswith("eval/")} == run_before


# ------------------------------------------------------------------------ case 3: a typo never locks a user out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "-1"], "train.seed"),
        (["--seed", "99999999999999999999999"], "train.seed"),
        (["--set", "data.split_seed=-3"], "data.split_seed"),
        (["--channels", "purple"], "purple"),
        (["--set", "augment.mixup_alpha=0"], "augment.mixup_alpha"),
        (["--set", "augment.cutmix_beta=-1"], "augment.cutmix_beta"),
        (["--set", "train.max_steps=-5"], "train.max_steps"),
        (["--set", "train.max_steps=0"], "train.max_steps"),
        # 48 fields: val 0.97 leaves 1 to train on; 0.5 + test 0.49 leaves 0 (the sizes are named)
        (["--set", "data.val_frac=0.97", "--set", "data.test_frac=0"], "data.val_frac=0.97 leaves too few images"),
        (["--set", "data.val_frac=0.5", "--set", "data.test_frac=0.49"], "data.test_frac=0.49"),
        (["--set", "data.val_frac=0.5", "--set", "data.test_frac=0.49"], "0 train, 24 val, 24 test"),
    ],
)
def test_bad_values_are_refused_before_the_run_folder_is_made(args, named, kit, tmp_path, capsys, untouched):
    untouched.watch(kit.data)
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides()), *args])
    assert code == 2 and named in err, err
    assert not out.exists()
    untouched.check()


def test_fractions_that_leave_a_part_empty_make_no_sweep_run_folder(kit, tmp_path, capsys, untouched):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("grid:\n  data.val_frac: [0.2, 0.97]\n")
    untouched.watch(kit.data, sweep)
    out = tmp_path / "sw"
    overrides = kit.set_args(kit.overrides(data__test_frac=0))
    code, err = run_cli(capsys, ["sweep", str(sweep), "--out", str(out), *overrides])
    assert code == 2 and "data.val_frac=0.97" in err and "1 train, 47 val" in err, err
    assert [p.name for p in out.iterdir() if p.is_dir() and p.name != "splits"] == []  # no run folder
    untouched.check()


def test_a_run_that_failed_before_its_first_epoch_runs_again_with_the_corrected_command(
    dataset, kit, tmp_path, capsys, untouched
):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), *kit.set_args(kit.overrides(dataset))]
    image = sorted((dataset / "train").glob("*_green.png"))[3]
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])  # truncated: found only when the images are decoded, in the folder
    code, err = run_cli(capsys, base)
    assert code == 2 and image.name in err
    assert (out / "status").read_text().strip() == "failed"
    image.write_bytes(good)  # the user repairs the file
    untouched.watch(dataset)
    code, _ = run_cli(capsys, base)  # the same command: no "already holds a run", no "configuration differs"
    assert code == 0 and (out / "status").read_text().strip() == "done"
    untouched.check()


def test_an_out_folder_with_user_files_and_no_run_is_refused(kit, tmp_path, capsys, untouched):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "split.json").write_text('{"parts": {"train": [], "val": []}}')
    before = tree_hash(out)
    untouched.watch(kit.data)
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides())])
    assert code == 2 and str(out) in err and "notes.txt" in err and "split.json" in err
    assert tree_hash(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "split.json"]
    for command in (["train", *kit.set_args(kit.overrides())], ["predict", str(tmp_path), "--data", str(kit.data)]):
        code, err = run_cli(capsys, [command[0], "--out", "", *command[1:]])
        assert code == 2 and "--out" in err and "empty" in err
    untouched.check()  # the current folder too: `--out ""` would have written there


# ------------------------------------------------------------------------ case 4: YAML alias bombs, no traceback

BOMB = "\n".join(
    [
        'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
    ]
)


def test_yaml_alias_bombs_are_refused_quickly(kit, tmp_path, capsys, untouched):
    config = tmp_path / "bomb.yaml"
    config.write_text("train:\n  epochs: 1\nlog:\n  progress: lines\nx_" + BOMB.replace("\n", "\nx_"))
    described = tmp_path / "described.yaml"
    described.write_text(BOMB + "\ndescription: *a8\ngrid:\n  loss.name: [bce]\n")
    axis = tmp_path / "axis.yaml"
    axis.write_text(BOMB + "\ngrid:\n  loss.class_weights: *a8\n")
    untouched.watch(kit.data, config, described, axis)
    cases = [
        (["train", "--out", str(tmp_path / "t"), "--config", str(config)], str(config)),
        (["sweep", str(described), "--out", str(tmp_path / "s1"), "--data", str(kit.data)], str(described)),
        (["sweep", str(axis), "--out", str(tmp_path / "s2"), "--data", str(kit.data)], str(axis)),
        (["train", "--out", str(tmp_path / "t"), "--set", "data.path=" + BOMB.replace("\n", ", ").join("{}")], "--set"),
    ]
    for args, named in cases:
        start = time.perf_counter()
        code, err = run_cli(capsys, args)
        assert code == 2 and named in err and "aliases" in err, err
        assert time.perf_counter() - start < 5
    assert not any((tmp_path / n).exists() for n in ("t", "s1", "s2"))
    untouched.check()


# ------------------------------------------------------------------------ case 6: no silent acceptances


def test_one_grid_value_in_several_spellings_is_refused_naming_the_axis(kit, tmp_path, capsys, untouched):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("grid:\n  optim.lr: [0.001, 1e-3, 1E-3, 0.01]\n")
    untouched.watch(kit.data, sweep)
    code, err = run_cli(capsys, ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--data", str(kit.data)])
    assert code == 2 and "optim.lr" in err and "0.001 = 1e-3 = 1E-3" in err
    assert not (tmp_path / "sw").exists()
    untouched.check()


def test_a_sweep_over_500_runs_needs_yes(kit, tmp_path, capsys, untouched):
    sweep = tmp_path / "big.yaml"
    sweep.write_text(yaml.safe_dump({"grid": {"train.batch_size": list(range(1, 252))}, "seeds": 2}))
    untouched.watch(kit.data, sweep)
    code, err = run_cli(capsys, ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--data", str(kit.data)])
    assert code == 2 and "502 runs" in err and "--yes" in err
    assert not (tmp_path / "sw").exists()
    untouched.check()


def test_a_split_file_with_duplicate_ids_is_refused_naming_them(kit, tmp_path, capsys, untouched):
    made = tmp_path / "split.json"
    assert main(["split", "--data", str(kit.data), "--out", str(made)]) == 0
    split = json.loads(made.read_text())
    twice = split["parts"]["train"][:2]
    split["parts"]["train"] += twice
    made.write_text(json.dumps(split))
    untouched.watch(kit.data, made)
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides()), "--split", str(made)])
    assert code == 2 and str(made) in err and all(fid in err for fid in twice)
    assert not out.exists()
    untouched.check()


def test_rows_ending_in_a_stray_comma(dataset, tmp_path, capsys, untouched):
    clean = tmp_path / "clean.json"
    assert main(["split", "--data", str(dataset), "--out", str(clean)]) == 0
    csv = dataset / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    stray = tmp_path / "stray.json"
    assert run_cli(capsys, ["split", "--data", str(dataset), "--out", str(stray)])[0] == 0
    assert json.loads(stray.read_text())["parts"] == json.loads(clean.read_text())["parts"]
    csv.write_text("\n".join([lines[0], *(line + ",x" for line in lines[1:])]) + "\n")
    untouched.watch(dataset)
    code, err = run_cli(capsys, ["split", "--data", str(dataset), "--out", str(tmp_path / "x.json")])
    assert code == 2 and str(csv) in err and "more fields than the header" in err
    assert not (tmp_path / "x.json").exists()
    untouched.check()
