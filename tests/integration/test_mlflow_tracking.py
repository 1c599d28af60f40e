"""MLflow for real: a 2-point sweep logging to an `mlflow server` (SQLite backend) and to a file store (mlruns/),
read back through MlflowClient: one run per locbench run nested under the sweep's run, the resolved config as
parameters, per-epoch metrics, the summary, predictions and report as artifacts; a server that is down stops the
command before anything is trained."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from fixtures.cli import run_cli

from locbench.cli import main
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data", "fixtures.mlflow_server"]
pytestmark = pytest.mark.slow


def write_sweep(path: Path, cache_dir: Path, epochs: int) -> Path:
    spec = {
        "name": "mlflow-tiny",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"img_size": 32, "workers": 0, "cache_dir": str(cache_dir)},
            "train": {"epochs": epochs, "batch_size": 8, "device": "cpu"},
            "log": {"progress": "lines", "mlflow": True},
        },
        "grid": {"loss.name": ["bce", "focal"]},
        "seeds": [0],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_tree(uri: str, experiment: str) -> dict:
    """What the tracking store holds for ``experiment``: the sweep's run and its children, with params, metric
    histories and artifact paths."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        out = []
        for f in client.list_artifacts(run_id, path):
            out += artifacts(run_id, f.path) if f.is_dir else [f.path]
        return out

    tree = {}
    for r in runs:
        tree[r.info.run_id] = {
            "name": r.info.run_name,
            "status": r.info.status,
            "parent": r.data.tags.get("mlflow.parentRunId"),
            "params": r.data.params,
            "history": {
                k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics
            },
            "artifacts": sorted(artifacts(r.info.run_id)),
        }
    return tree


def check_tree(tree: dict, out: Path, epochs: int, report: bool) -> None:
    parents = [k for k, r in tree.items() if r["parent"] is None]
    assert len(parents) == 1, tree
    parent = tree[parents[0]]
    assert parent["name"] == "mlflow-tiny" and parent["status"] == "FINISHED"
    assert json.loads(parent["params"]["sweep.grid"]) == {"loss.name": ["bce", "focal"]}
    assert parent["history"]["runs/done"][-1][1] == 2
    if report:
        assert {"report/report.html", "report/report.md", "report/leaderboard.csv"} <= set(parent["artifacts"])
    children = {r["name"]: r for r in tree.values() if r["parent"] == parents[0]}
    plan = json.loads((out / "plan.json").read_text())
    assert set(children) == {e["run_id"] for e in plan["runs"]}
    for name, child in children.items():
        run = RunDir(out / name)
        assert child["status"] == "FINISHED"
        config = run.read_config()
        for section, values in config.items():  # the resolved config, key by key
            for key, value in values.items():
                assert child["params"][f"{section}.{key}"] == str(value), (section, key)
        history = run.read_metrics()
        assert [s for s, _ in child["history"]["val/map"]] == list(range(1, epochs + 1))
        assert [v for _, v in child["history"]["val/map"]] == pytest.approx([h["val/map"] for h in history])
        summary = run.read_summary()
        assert child["history"]["final/val/map"][-1][1] == pytest.approx(summary["val"]["map"])
        assert {"summary.json", "config.yaml", "thresholds.json", "predictions/val.npz"} <= set(child["artifacts"])
        assert json.loads((out / name / "mlflow.json").read_text())["run_id"] in tree


def test_sweep_logs_to_an_mlflow_server(kit, mlflow_server, tmp_path):
    out = tmp_path / "out"
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, epochs=2)
    args = ["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data), "--report"]
    args += ["--set", f"log.mlflow_uri={mlflow_server}", "--set", "log.mlflow_experiment=server-sweep"]
    assert main(args) == 0
    tree = run_tree(mlflow_server, "server-sweep")
    check_tree(tree, out, epochs=2, report=True)
    assert main(args) == 0  # a finished sweep run again: nothing new in MLflow
    assert set(run_tree(mlflow_server, "server-sweep")) == set(tree)


def test_sweep_logs_to_a_file_store(kit, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, epochs=1)
    args = ["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data), "--set", "log.mlflow_uri=mlruns"]
    assert main(args) == 0
    assert (tmp_path / "mlruns").is_dir()
    check_tree(run_tree((tmp_path / "mlruns").as_uri(), "locbench"), out, epochs=1, report=False)


def test_a_server_that_is_down_stops_the_sweep_before_anything_runs(kit, tmp_path, capsys):
    pytest.importorskip("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens there
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, epochs=1)
    args = ["sweep", str(sweep_file), "--out", str(tmp_path / "out"), "--data", str(kit.data)]
    code, err = run_cli(capsys, [*args, "--set", f"log.mlflow_uri={uri}"])
    assert code == 2 and f"the MLflow server at {uri} does not answer" in err and "nothing was started" in err
    assert not (tmp_path / "out").exists()
    cfg_args = ["train", "--out", str(tmp_path / "run"), *kit.set_args(kit.overrides(log__mlflow=True))]
    code, err = run_cli(capsys, [*cfg_args, "--set", f"log.mlflow_uri={uri}"])
    assert code == 2 and f"the MLflow server at {uri} does not answer" in err
    assert not (tmp_path / "run").exists()


def test_a_run_that_diverges_ends_its_mlflow_run_failed(kit, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    overrides = kit.overrides(optim__lr=1e30, train__max_steps=1, train__epochs=2)
    args = ["train", "--out", str(run), *kit.set_args(overrides), "--set", "log.mlflow=true"]
    assert run_cli(capsys, [*args, "--set", "log.mlflow_uri=mlruns"])[0] == 3
    (only,) = run_tree((tmp_path / "mlruns").as_uri(), "locbench").values()
    assert only["name"] == "run" and only["status"] == "FAILED"  # not left RUNNING
