"""Controls: Scratch-E/B, uniform width scaling and random channels within a method's widths, as
runs, as studies mirroring a method's study, and as control rows in `compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.config import compose, method_label, parse_method_label
from harness.errors import ConfigError
from harness.report.compare import StudyPoints, _markdown, compare_tables, format_cell
from harness.report.significance import paired_t
from harness.study.settings import study_name
from methods.controls import _fan_ins, rescale_init
from tests.conftest import TINY_RUN

TINY = [*TINY_RUN, "train.epochs=2", "finetune.epochs=1", "target=0.5"]


def test_a_control_with_a_method_source_has_its_own_study_and_row_label():
    assert method_label({"name": "scratch_b", "source": "l1"}) == "scratch_b@l1"
    assert method_label({"name": "scratch_b", "source": "/runs/x"}) == "scratch_b"  # a path
    assert method_label({"name": "l1"}) == "l1"
    assert parse_method_label("scratch_b@l1") == {"name": "scratch_b", "source": "l1"}
    cfg = compose(["data=digits", "method=scratch_b", "method.source=l1", "seed=2"])
    assert study_name(cfg) == "classification-digits-resnet20-scratch_b@l1-s2"


def test_a_narrowed_fresh_layer_gets_the_fan_in_scale_of_its_width():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 3))
    before = _fan_ins(net)
    w = net[1].weight.detach().clone()
    first = net[0].weight.detach().clone()
    net[1].weight = nn.Parameter(w[:, :4].clone())  # 16 → 4 input channels
    net[1].in_channels = 4
    rescale_init(net, before)
    assert torch.allclose(net[1].weight, w[:, :4] * 2.0)  # √(16·9 / (4·9))
    assert before == {"0": 27, "1": 144}  # 3·3·3 and 16·3·3 inputs per output unit
    assert torch.equal(net[0].weight, first)  # its fan-in did not change: untouched


def control_studies() -> list[StudyPoints]:
    """Method a picks trial 0 at 0.3 (test 90, 92, 94 by seed). Its Scratch-B control trained
    that architecture (its trial 1, source 0) to 91, 92, 93: a − control = [−1, 0, 1], not
    better. The control's own best at 0.3 would be its trial 2 (val 99, test 50, source 7):
    never shown for a, whose pick is trial 0. uniform: its own pick (85)."""

    def sp(method, seed, trials, sources=()):
        macs, val, test = (list(x) for x in zip(*trials, strict=True))
        return StudyPoints(method, seed, f"{method}-s{seed}", list(range(len(trials))), macs,
                           val, test, sources=list(sources))  # fmt: skip

    out = []
    for s in range(3):
        out.append(sp("a", s, [(0.30, 95.0, 90.0 + 2 * s), (0.5, 99.0, 99.0)]))
        out.append(sp("scratch_b@a", s, [(0.5, 98.0, 98.0), (0.30, 90.0, 91.0 + s),
                                         (0.25, 99.0, 50.0)], [1, 0, 7]))  # fmt: skip
        out.append(sp("uniform", s, [(0.28, 90.0, 85.0)]))
    return out


def test_compare_shows_controls_apart_and_marks_a_method_not_better_than_its_scratch_b():
    t = compare_tables(control_studies(), split="test", targets=[0.3], reference=(1.0, 10.0),
                       controls=["scratch_b@a", "uniform"])  # fmt: skip
    s = t["summary"].set_index("method")
    assert dict(s["control"]) == {"a": False, "scratch_b@a": True, "uniform": True}
    assert s.loc["scratch_b@a", "q@0.3_mean"] == pytest.approx(92.0)  # mirrored, not 50
    assert s.loc["uniform", "q@0.3_mean"] == pytest.approx(85.0)
    assert s.loc["a", "q@0.3_mark"] == "best"  # controls are never ranked against methods
    assert s.loc["uniform", "q@0.3_mark"] == "control"
    assert s.loc["a", "q@0.3_scratch"] == "not better"
    assert format_cell(s.loc["a"], "q@0.3") == "92.00 ± 2.00 (3/3) ★ ‡"
    tests = t["tests"].set_index(["column", "vs"])
    vs = tests.loc[("q@0.3", "scratch_b@a")]
    assert (vs["method"], vs["diff"], vs["p_raw"]) == ("a", pytest.approx(0.0), 1.0)
    md = _markdown(t, title="x", split="test", targets=[0.3], granularity=0.0, alpha=0.05,
                   provenance=[])  # fmt: skip
    methods_part, controls_part = md.split("### Controls")
    assert "| a |" in methods_part and "| uniform |" not in methods_part
    assert "| scratch_b@a |" in controls_part and "| uniform |" in controls_part
    assert "‡ on a method's cell" in controls_part


def test_compare_logs_each_control_study_hypervolume_to_mlflow(tmp_path):
    # a control's label has '@', which MLflow refuses in a metric name: the comparison crashed
    # after writing its report
    from harness.report.compare import _log_compare
    from harness.tracking import mlflow_client

    cfg = compose([*TINY, f"outputs={tmp_path}", "compare.methods=[a]", "tracking.enabled=true"])
    (tmp_path / "report").mkdir()
    prov = {"command": "x", "seeds": "0 1 2", "git_sha": "abc", "git_dirty": False}
    tracker, hv = _log_compare(cfg, control_studies(), tmp_path / "report", stem="x",
                               split="test", reference=(1.0, 10.0), prov=prov)  # fmt: skip
    assert set(hv) == {"a", "scratch_b@a", "uniform"}
    client = mlflow_client(tracker.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(tracker.experiment).experiment_id])
    assert {"hypervolume.scratch_b:a.s0", "hypervolume.a.s2"} <= set(run.data.metrics)


def test_a_method_clearly_ahead_of_its_scratch_b_is_marked_better():
    studies = [sp for sp in control_studies() if sp.method != "uniform"]
    for sp in studies:  # the control now trails a by [10, 11, 11]
        if sp.method == "scratch_b@a":
            sp.test[1] = [80.0, 81.0, 83.0][sp.seed]
    t = compare_tables(studies, split="test", targets=[0.3], reference=(1.0, 10.0),
                       controls=["scratch_b@a"])  # fmt: skip
    s = t["summary"].set_index("method")
    p = paired_t({0: 90.0, 1: 92.0, 2: 94.0}, {0: 80.0, 1: 81.0, 2: 83.0}).p
    assert s.loc["a", "q@0.3_scratch"] == "better"
    # the family: a vs its control on hypervolume and on q@0.3 (a is alone among methods)
    assert s.loc["a", "q@0.3_scratch_p"] >= p
    assert "‡" not in format_cell(s.loc["a"], "q@0.3")


def test_a_control_without_its_source_is_refused_with_the_fix(tmp_path):
    from harness.run.pipeline import run

    with pytest.raises(ConfigError, match="needs method.source"):
        run(compose([*TINY, "method=scratch_b", f"outputs={tmp_path}"]))
    with pytest.raises(ConfigError, match="set method.source_trial"):
        run(compose([*TINY, "method=scratch_e", "method.source=l1", f"outputs={tmp_path}"]))
    with pytest.raises(ConfigError, match="method.budget='c'"):
        run(compose([*TINY, "method=uniform", "method.budget=c", f"outputs={tmp_path}"]))


def kept_counts(run_dir: str) -> dict[str, int]:
    doc = json.loads((Path(run_dir) / "plan.json").read_text())
    return {g: len(k) for g, k in doc["plan"].items()}


@pytest.mark.slow
def test_controls_rebuild_the_source_architecture_and_train_it_as_declared(tmp_path):
    from harness.run.pipeline import run

    base = [*TINY, f"outputs={tmp_path}"]
    source = run(compose([*base, "method=l1"]))
    folder = source["artifacts"]
    scratch_e = run(compose([*base, "method=scratch_e", f"method.source={folder}"]))
    scratch_b = run(compose([*base, "method=scratch_b", f"method.source={folder}"]))
    for r in (scratch_e, scratch_b):  # the same architecture, trained only from scratch
        assert r["macs"] == source["macs"] and r["params"] == source["params"]
        assert r["finetune_epochs"] == 0
    assert scratch_e["cost_search_epochs"] == 2.0 and scratch_e["budget_mode"] == "scratch-e"
    factor = source["macs_base"] / source["macs"]  # Scratch-B: the baseline's compute
    assert scratch_b["search_scratch_factor"] == pytest.approx(factor)
    assert scratch_b["cost_search_epochs"] == round(2 * factor)
    # re-initialised: not the pruned baseline's weights
    state = torch.load(Path(scratch_e["artifacts"]) / "model.pt", weights_only=True)
    pruned = torch.load(Path(folder) / "model.pt", weights_only=True)
    assert not torch.allclose(state["stem.0.weight"], pruned["stem.0.weight"])

    widths = run(compose([*base, "method=random_widths", f"method.source={folder}"]))
    assert kept_counts(widths["artifacts"]) == kept_counts(folder)
    assert widths["macs"] == source["macs"] and widths["finetune_epochs"] == 1
    mine = json.loads((Path(widths["artifacts"]) / "plan.json").read_text())["plan"]
    theirs = json.loads((Path(folder) / "plan.json").read_text())["plan"]
    assert mine != theirs  # other channels, same counts

    uniform = run(compose([*base, "method=uniform", "method.budget=e"]))
    assert uniform["macs_ratio"] <= 0.5 and uniform["cost_search_epochs"] == 2.0
    counts = kept_counts(uniform["artifacts"])
    sizes = {"stem.0": 8, "c1.0": 12}  # two groups of TinyResNet: their fractions agree
    fractions = [counts[g] / n for g, n in sizes.items() if g in counts]
    assert fractions and max(fractions) - min(fractions) <= 1 / 8 + 1e-9
    assert not math.isnan(uniform["val_metric"])


@pytest.mark.slow
def test_a_scratch_study_mirrors_its_method_study_and_compare_pairs_them(tmp_path):
    import optuna

    from harness.report.compare import collect
    from harness.study import run_study

    base = [*TINY, f"outputs={tmp_path}", "study.n_trials=2", "study.target.low=0.3",
            "compare.methods=[l1]", "compare.controls=[scratch_b@l1]", "compare.seeds=[0]",
            "compare.targets=[0.5]"]  # fmt: skip
    run_study(compose([*base, "method=l1"]))
    control = run_study(compose([*base, "method=scratch_b", "method.source=l1"]))
    assert control["study_name"].endswith("-scratch_b@l1-s0")
    studies = {sp.method: sp for sp in collect(compose(base))}
    l1, scratch = studies["l1"], studies["scratch_b@l1"]
    assert scratch.sources == l1.trials  # trial k trained l1's trial-k architecture
    assert [round(m, 6) for m in scratch.macs] == [round(m, 6) for m in l1.macs]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    trials = optuna.load_study(study_name=control["study_name"], storage=storage).trials
    assert {t.user_attrs["budget_mode"] for t in trials} == {"scratch-b"}
    t = compare_tables(list(studies.values()), split="test", targets=[0.5],
                       reference=(1.0, 10.0), controls=["scratch_b@l1"])  # fmt: skip
    assert list(t["summary"]["control"]) == [False, True]


def test_the_listing_names_controls_as_controls(capsys):
    from harness.cli.main import main

    assert main(["list"]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["methods"]
    kinds = {m: listing[m]["kind"] for m in ("scratch_e", "scratch_b", "uniform", "random_widths")}
    assert set(kinds.values()) == {"control"} and listing["l1"]["kind"] == "OneShotMethod"
