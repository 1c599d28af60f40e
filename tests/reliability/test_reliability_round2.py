"""Issue 13, second round of adversarial inputs: outputs that would overwrite inputs (case 2), typos that locked a
user out of a run folder (case 3), tracebacks and YAML alias bombs (case 4), silent acceptances (case 6).

Every case asserts the exit code, that the message names the offender, and that nothing outside the run or output
folder changed (the dataset, and the run folder a command only reads, are hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from fixtures.cli import run_cli

from locbench.cli import main

pytest_plugins = ["fixtures.synth_data"]


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: relative path -> sha256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------ case 2: outputs never overwrite inputs


def test_outputs_never_overwrite_inputs(dataset, run_copy, tmp_path, capsys):
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
    ],
)
def test_bad_values_are_refused_before_the_run_folder_is_made(args, named, kit, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides()), *args])
    assert code == 2 and named in err, err
    assert not out.exists()


def test_a_run_that_failed_before_its_first_epoch_runs_again_with_the_corrected_command(dataset, kit, tmp_path, capsys):
    data_before = tree_hash(dataset)
    out = tmp_path / "run"
    base = ["train", "--out", str(out), *kit.set_args(kit.overrides(dataset))]
    code, err = run_cli(capsys, [*base, "--set", "data.val_frac=0.75"])  # with the test part: too few to train on
    assert code == 2 and "train" in err
    assert (out / "status").read_text().strip() == "failed"
    code, _ = run_cli(capsys, base)  # the corrected command: no "already holds a run", no "configuration differs"
    assert code == 0 and (out / "status").read_text().strip() == "done"
    split = json.loads((out / "split.json").read_text())
    assert len(split["parts"]["train"]) > len(split["parts"]["val"])  # the failed attempt's split was not adopted
    assert tree_hash(dataset) == data_before


def test_an_out_folder_with_user_files_and_no_run_is_refused(kit, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "split.json").write_text('{"parts": {"train": [], "val": []}}')
    before = tree_hash(out)
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides())])
    assert code == 2 and str(out) in err and "notes.txt" in err and "split.json" in err
    assert tree_hash(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "split.json"]
    for command in (["train", *kit.set_args(kit.overrides())], ["predict", str(tmp_path), "--data", str(kit.data)]):
        code, err = run_cli(capsys, [command[0], "--out", "", *command[1:]])
        assert code == 2 and "--out" in err and "empty" in err


# ------------------------------------------------------------------------ case 4: YAML alias bombs, no traceback

BOMB = "\n".join(
    [
        'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
    ]
)


def test_yaml_alias_bombs_are_refused_quickly(kit, tmp_path, capsys):
    data_before = tree_hash(kit.data)
    config = tmp_path / "bomb.yaml"
    config.write_text("train:\n  epochs: 1\nlog:\n  progress: lines\nx_" + BOMB.replace("\n", "\nx_"))
    described = tmp_path / "described.yaml"
    described.write_text(BOMB + "\ndescription: *a8\ngrid:\n  loss.name: [bce]\n")
    axis = tmp_path / "axis.yaml"
    axis.write_text(BOMB + "\ngrid:\n  loss.class_weights: *a8\n")
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
    assert tree_hash(kit.data) == data_before


# ------------------------------------------------------------------------ case 6: no silent acceptances


def test_one_grid_value_in_several_spellings_is_refused_naming_the_axis(kit, tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("grid:\n  optim.lr: [0.001, 1e-3, 1E-3, 0.01]\n")
    code, err = run_cli(capsys, ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--data", str(kit.data)])
    assert code == 2 and "optim.lr" in err and "0.001 = 1e-3 = 1E-3" in err
    assert not (tmp_path / "sw").exists()


def test_a_sweep_over_500_runs_needs_yes(kit, tmp_path, capsys):
    sweep = tmp_path / "big.yaml"
    sweep.write_text(yaml.safe_dump({"grid": {"train.batch_size": list(range(1, 252))}, "seeds": 2}))
    code, err = run_cli(capsys, ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--data", str(kit.data)])
    assert code == 2 and "502 runs" in err and "--yes" in err
    assert not (tmp_path / "sw").exists()


def test_a_split_file_with_duplicate_ids_is_refused_naming_them(kit, tmp_path, capsys):
    made = tmp_path / "split.json"
    assert main(["split", "--data", str(kit.data), "--out", str(made)]) == 0
    split = json.loads(made.read_text())
    twice = split["parts"]["train"][:2]
    split["parts"]["train"] += twice
    made.write_text(json.dumps(split))
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides()), "--split", str(made)])
    assert code == 2 and str(made) in err and all(fid in err for fid in twice)


def test_rows_ending_in_a_stray_comma(dataset, tmp_path, capsys):
    clean = tmp_path / "clean.json"
    assert main(["split", "--data", str(dataset), "--out", str(clean)]) == 0
    csv = dataset / "train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    stray = tmp_path / "stray.json"
    assert run_cli(capsys, ["split", "--data", str(dataset), "--out", str(stray)])[0] == 0
    assert json.loads(stray.read_text())["parts"] == json.loads(clean.read_text())["parts"]
    csv.write_text("\n".join([lines[0], *(line + ",x" for line in lines[1:])]) + "\n")
    code, err = run_cli(capsys, ["split", "--data", str(dataset), "--out", str(tmp_path / "x.json")])
    assert code == 2 and str(csv) in err and "more fields than the header" in err
