"""Hydra's entry point: --help, --cfg job, `show`, sweeps through real launchers (basic, joblib,
submitit_local; submitit_slurm against a real Slurm in test_slurm.py), and the checks that refuse
a bad sweep before anything starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli.launch import job_device
from harness.cli.main import main
from harness.study.placement import place_workers, visible_devices

GROUP_NAMES = ("data:", "method:", "model:", "study:", "task:")


@pytest.mark.parametrize("args", [["run", "--help"], ["run", "-h"], ["study", "--help"]])
def test_help_lists_the_config_groups_and_keys(args, capsys):
    assert main(args) == 0
    out = capsys.readouterr().out
    for group in GROUP_NAMES:
        assert group in out
    assert "dhp" in out and "resnet56" in out and "study.n_trials" in out
    assert f"prunebench {args[0]}" in out


def test_cfg_job_prints_the_resolved_config(capsys):
    assert main(["study", "--cfg", "job", "method=dhp", "model=resnet56"]) == 0
    out = capsys.readouterr().out
    assert "name: dhp" in out and "name: resnet56" in out and "n_trials:" in out
    assert "hydra:" not in out


def test_show_method_lists_hyperparameters_defaults_and_space(capsys):
    assert main(["show", "method=dhp"]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["hyperparameters"]["stop_limit"] == 0.01
    assert shown["search_space"]["method.stop_limit"]["default"] == 0.01
    assert shown["search_space"]["method.threshold"]["log"] is True
    assert "method.threshold" in captured.err and "stop_limit" in captured.err


@pytest.mark.parametrize(
    "args, match",
    [
        (["study", "-m", "method=l1", "hydra/launcher=jolib"], "unknown launcher 'jolib'"),
        (["study", "-m", "method=l1,random", "outputs=a,b"], "cannot sweep outputs"),
        (["study", "-m", "study.storage=sqlite:///a.db,sqlite:///b.db"], "cannot sweep"),
        (["run", "-m", "model=resnet20,resnet57"], "unknown model 'resnet57'"),
        (["study", "-m", "method=l1,random", "study.name=x"], "study.name is fixed"),
        (["run", "-m", "nosuchkey=1,2"], "bad configuration"),
    ],
)
def test_bad_sweeps_get_one_line_and_start_nothing(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*args, f"outputs={tmp_path / 'out'}"] if "outputs" not in str(args) else args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], captured.err
    assert captured.out == ""
    assert not (tmp_path / "out" / "multirun").exists()
    assert not list(tmp_path.glob("**/multirun"))


def test_slurm_launcher_without_a_controller_is_refused(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "slurm.conf"
    bad.write_text("SlurmctldHost=localhost\nSlurmctldPort=9\nClusterName=none\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    args = ["study", "-m", "method=l1,random", "hydra/launcher=submitit_slurm"]
    assert main([*args, f"outputs={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "submitit_slurm" in err[0] and "submitit_local" in err[0]
    assert not (tmp_path / "multirun").exists()


def test_single_runs_ignore_hydra_settings(capsys):
    assert main(["measure", "model=resnet20", "hydra/launcher=joblib"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "resnet20"
    assert "apply to sweeps" in captured.err


def sweep_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


# real launcher plug-ins; measure jobs take a second each; joblib's and submitit's worker processes
# take 10-20 s on a loaded 2-core machine
@pytest.mark.parametrize(
    "launcher",
    [
        "basic",
        pytest.param("joblib", marks=pytest.mark.slow),
        pytest.param("submitit_local", marks=pytest.mark.slow),
    ],
)
def test_measure_sweep_prints_one_json_line_per_job(launcher, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = {
        "joblib": ["hydra.launcher.n_jobs=2"],
        "submitit_local": ["hydra.launcher.timeout_min=5"],
    }.get(launcher, [])
    args = ["measure", "-m", "model=resnet20,resnet56", "task=classification",
            f"hydra/launcher={launcher}", *extra, "outputs=out"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = sweep_lines(out)
    assert sorted(r["model"] for r in lines) == ["resnet20", "resnet56"]
    assert {r["hydra_job"]["num"] for r in lines} == {0, 1}
    assert Path.cwd() == tmp_path  # no working-directory change
    sweep = next((tmp_path / "out" / "multirun").glob("*/*"))
    manifest = sweep_lines((sweep / "jobs.jsonl").read_text())
    assert [r["launcher"] for r in manifest] == [launcher] * 2
    for r in lines:
        job_dir = Path(r["hydra_job"]["output_dir"])
        assert job_dir.parent == sweep and (job_dir / ".hydra" / "config.yaml").exists()
        assert (job_dir / "measure.log").exists()


def test_placement_spreads_workers_over_devices_and_caps_per_device():
    assert place_workers(4, [], 2) == [None] * 4
    assert place_workers(4, ["0", "1"], 2) == ["0", "1", "0", "1"]
    assert place_workers(3, ["0", "1", "2", "3"], None) == ["0", "1", "2"]
    assert place_workers(2, ["0", "1"], 2, first=2) == ["0", "1"]  # launcher job 1 of a study
    with pytest.raises(Exception, match="workers_per_device=2"):
        place_workers(5, ["0", "1"], 2)
    with pytest.raises(Exception, match="use 1 or more"):
        place_workers(1, ["0"], 0)


def test_visible_devices_read_cuda_visible_devices():
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_devices({}, count=3) == ["0", "1", "2"]


def test_sweep_jobs_go_round_robin_over_gpus():
    from omegaconf import OmegaConf

    auto, pinned = OmegaConf.create({"device": "auto"}), OmegaConf.create({"device": "cuda:0"})
    assert [job_device(n, auto, ["0", "1", "2"]) for n in range(4)] == ["0", "1", "2", "0"]
    assert job_device(1, auto, ["0"]) is None
    assert job_device(1, pinned, ["0", "1"]) is None
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != "1"  # nothing set by a pure function


def test_study_names_its_objectives_for_optuna_dashboard(tmp_path):
    """optuna-dashboard (a real client, through its WSGI app) labels the axes by name."""
    import io

    import optuna

    from harness.cli.main import compose
    from harness.study import SearchSpace
    from harness.study.fingerprint import trial_settings
    from harness.study.opening import open_study
    from harness.study.settings import StudySettings, identity
    from harness.study.storage import resolve_storage

    cfg = compose(["data=digits", "method=l1", f"outputs={tmp_path}"])
    settings = StudySettings.from_cfg(cfg)
    spec = resolve_storage(None, outputs=str(tmp_path), workers=1)
    meaning = trial_settings(cfg, SearchSpace.from_config(cfg).names)
    study = open_study(settings, spec, spec.open(), identity(cfg, settings), meaning)
    study.add_trial(optuna.create_trial(values=[90.0, 0.5]))
    reloaded = optuna.load_study(study_name=settings.name, storage=spec.url)
    assert reloaded.metric_names == ["quality", "macs_ratio"]
    dashboard = pytest.importorskip("optuna_dashboard", reason="pip install '.[dashboard]'")
    app = dashboard.wsgi(spec.url)
    status: list[str] = []
    path = f"/api/studies/{study._study_id}"
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME":
               "localhost", "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme":
               "http", "wsgi.errors": io.StringIO()}  # fmt: skip
    body = b"".join(app(environ, lambda s, h, *exc: status.append(s)))
    assert status[0].startswith("200"), status
    assert json.loads(body)["objective_names"] == ["quality", "macs_ratio"]  # the axis labels
