"""The wheel: `pip wheel .` builds one that installs into a fresh venv outside the repository and runs
`locbench demo --images 60` from an empty folder (the shipped configs travel inside the package).

To stay offline and fast, the fresh venv borrows the heavy dependencies (torch, timm, ...) of the environment
running the tests: its site-packages gets a .pth line naming this environment's site-packages as a plain path
entry. A plain entry is not a site dir, so the .pth files in there (such as an editable install of locbench) are
not run, and the venv's own site-packages, where the wheel goes, comes first on sys.path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(args: list, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_in_a_fresh_venv_and_runs_the_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")

    # `pip wheel .` in a copy of what the build reads (a build in the checkout would leave build/ and *.egg-info
    # there); no build isolation: the build backend installed here, offline
    src = tmp_path / "src"
    shutil.copytree(REPO / "locbench", src / "locbench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    args = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", dist]
    _run(args, cwd=src, env=env, timeout=300)
    (wheel,) = dist.glob("locbench-*.whl")

    # a fresh venv outside the repository that sees this environment's packages after its own
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env, timeout=120)
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", code], cwd=tmp_path, env=env, timeout=60).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_locbench_test_deps.pth").write_text("\n".join(deps) + "\n")
    # pip comes from the borrowed packages; --ignore-installed: never touch the locbench installed out there
    args = [python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel]
    _run(args, cwd=tmp_path, env=env, timeout=300)

    # the installed locbench is the wheel's, with its configs
    code = "import json, locbench, locbench.sweep.files as f; print(json.dumps([locbench.__file__, str(f.CONFIG_DIR)]))"
    where, configs = json.loads(_run([python, "-c", code], cwd=tmp_path, env=env, timeout=120).stdout)
    assert Path(where).is_relative_to(site) and Path(configs).is_relative_to(site), (where, configs)
    assert (Path(configs) / "sweeps" / "demo.yaml").is_file()
    assert (site / "locbench" / "py.typed").is_file()

    # `locbench demo` from an empty folder outside the repository: about 60 s of one core (24 tiny runs), measured
    # at 470 s with four jobs sharing two cores, hence the generous limit (it only catches a hang)
    work = tmp_path / "empty"
    work.mkdir()
    proc = _run([venv / "bin" / "locbench", "demo", "--images", "60"], cwd=work, env=env, timeout=1800)
    report = work / "demo-out" / "sweep" / "report.html"
    assert report.is_file() and (report.parent / "report.md").is_file()
    assert "report: demo-out/sweep/report.html" in proc.stdout
    assert str(REPO) not in proc.stderr  # nothing came from the checkout (the log names the sweep file it ran)
    assert str(site / "locbench" / "configs" / "sweeps" / "demo.yaml") in proc.stderr
