"""Nothing locbench reads runs code: checkpoints are safetensors + JSON (no pickle), YAML is read with safe_load,
config values are data (never evaluated or imported).

Each planted payload would create a marker file if it ever ran; the tests assert it does not exist.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest

from locbench.cli import main

pytest_plugins = ["fixtures.synth_data"]

PACKAGE = Path(__file__).resolve().parents[2] / "locbench"


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_the_payload_does_run_when_unpickled(tmp_path):
    """The control: the planted bytes are a real exploit (so the refusals below mean something)."""
    marker = tmp_path / "ran"
    pickle.loads(_evil_pickle(marker))  # noqa: S301 - deliberately, to prove the payload works
    assert marker.exists()


def test_a_pickle_planted_as_the_best_checkpoint_is_refused(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("epoch-*"))
    marker = tmp_path / "pwned"
    blob = _evil_pickle(marker)
    (run / "checkpoints" / "best.safetensors").write_bytes(blob)
    meta = run / "checkpoints" / "best.json"
    # first with the old checksum (detected as corrupt), then with a matching one (must still not be unpickled)
    for fix_checksum in (False, True):
        if fix_checksum:
            obj = json.loads(meta.read_text())
            obj["sha256"] = hashlib.sha256(blob).hexdigest()
            meta.write_text(json.dumps(obj))
        assert main(["evaluate", str(run), "--device", "cpu", "--workers", "0"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "best.safetensors" in err
        assert not marker.exists()
    assert "never pickles" in err


def test_a_pickle_planted_as_an_epoch_checkpoint_is_refused_on_resume(kit, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *kit.set_args(kit.overrides(train__epochs=2))]
    assert main(args) == 0
    marker = tmp_path / "pwned"
    blob = _evil_pickle(marker)
    stem = run / "checkpoints" / "epoch-0002"
    stem.with_suffix(".safetensors").write_bytes(blob)
    obj = json.loads(stem.with_suffix(".json").read_text())
    obj["sha256"] = hashlib.sha256(blob).hexdigest()
    stem.with_suffix(".json").write_text(json.dumps(obj))
    (run / "status").write_text("running\n")
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "epoch-0002.safetensors" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickled_pt_file_as_pretrained_weights_is_refused(kit, tmp_path, capsys):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    weights.write_bytes(_evil_pickle(marker))
    over = kit.overrides(model__pretrained=True, model__pretrained_file=str(weights))
    assert main(["train", "--out", str(tmp_path / "run"), *kit.set_args(over)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(weights) in err
    assert not marker.exists()


def _code_lines(pattern: str) -> list[str]:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    return hits


def test_no_torch_load_without_weights_only():
    calls = _code_lines(r"\btorch\.load\(|\bload\(.*map_location")
    unsafe = [c for c in calls if "weights_only=True" not in c]
    assert unsafe == [], "torch.load without weights_only=True unpickles arbitrary code"


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (r"\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|\bjoblib\.load\(", "unpickling"),
        (r"allow_pickle\s*=\s*True", "numpy pickles"),
        (r"\byaml\.(unsafe_)?load\(|\byaml\.load_all\(|FullLoader|UnsafeLoader|yaml\.Loader\b", "unsafe YAML"),
        (r"(?<![\w.])(eval|exec)\(", "eval/exec"),
    ],
)
def test_the_package_never_runs_code_from_files(pattern, what):
    assert _code_lines(pattern) == [], what


def test_imports_by_name_only_for_locbench_modules():
    """Imports by name are of locbench's own modules (commands, the lazy public API), never of a config value."""
    for hit in _code_lines(r"\bimport_module\(|__import__\("):
        assert re.search(r"import_module\((f\"locbench\.|_API\[)|__import__\(\"\w+\"\)", hit), hit


def test_python_tags_in_yaml_are_refused_and_never_run(kit, tmp_path, capsys):
    marker = tmp_path / "pwned"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    config = tmp_path / "config.yaml"
    config.write_text(f"train:\n  epochs: {tag}\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "t"), "--data", str(kit.data)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "not valid YAML" in err and "python/object/apply" in err
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"grid:\n  loss.name: [bce, {tag}]\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--data", str(kit.data)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    # a --set value is YAML too: the tag is refused and the text kept as a plain string, which fails type checks
    over = kit.overrides()
    assert main(["train", "--out", str(tmp_path / "t2"), *kit.set_args(over), "--set", f"train.epochs={tag}"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert not marker.exists()


def test_config_strings_are_names_not_code(kit, tmp_path, capsys):
    """A loss, backbone or augmentation name is looked up in a registry or timm; it is never imported or run."""
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    for key in ("loss.name", "model.backbone", "augment.name", "model.head"):
        args = ["train", "--out", str(tmp_path / "t"), *kit.set_args(kit.overrides()), "--set", f"{key}={payload}"]
        assert main(args) == 2
        assert "unknown" in capsys.readouterr().err
    assert not marker.exists()
