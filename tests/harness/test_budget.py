"""Equal training budgets by default: every trial trains the same epochs (its own phase plus
fine-tuning), one-shot methods get the difference as fine-tuning; `paper` keeps each schedule."""

from __future__ import annotations

import pytest

from harness.config import compose
from harness.errors import ConfigError
from harness.run.budget import Budget, plan_budget
from harness.run.pipeline import build_method, run
from harness.runtime.plugins import load_configured
from tests.conftest import TINY_RUN

TINY = [*TINY_RUN, "train.epochs=1", "finetune.epochs=1"]


def budget_of(*overrides: str) -> Budget:
    cfg = compose([*TINY, *overrides])
    load_configured(cfg)

    def build(method_cfg):
        return build_method(method_cfg, model=cfg.model.name, task=cfg.task.name)

    return plan_budget(cfg, build(cfg.method), build)


def test_the_default_total_is_fine_tuning_plus_the_longest_phase_of_the_compared_methods():
    # sfp trains 2 soft epochs here; slimming its configured 5 (conf/method/slimming.yaml),
    # the longest: the total is 1 + 5 for every method compared
    compared = "compare.methods=[l1,sfp,slimming]"
    l1 = budget_of("method=l1", compared)
    sfp = budget_of("method=sfp", "method.epochs=2", compared)
    assert (l1.mode, l1.total_epochs) == ("equal", 6.0)
    assert sfp.total_epochs == l1.total_epochs
    assert l1.finetune_for(0.0) == 6 and sfp.finetune_for(2.0) == 4
    # paper: the configured fine-tuning whatever the phase
    paper = budget_of("method=sfp", "budget.mode=paper")
    assert paper.total_epochs is None and paper.finetune_for(3.0) == 1


def test_an_explicit_total_the_phase_cannot_fit_is_refused():
    with pytest.raises(ConfigError, match="budget.epochs=2 is less than the 3 epochs"):
        budget_of("method=sfp", "method.epochs=3", "budget.epochs=2")
    with pytest.raises(ConfigError, match="budget.mode=fair"):
        budget_of("method=l1", "budget.mode=fair")


def test_a_search_from_scratch_counts_against_the_baselines_epochs():
    # DHP has no baseline behind it: 4 search epochs against a 1-epoch baseline are 3 of its
    # own; a search that stops after 2 epochs leaves it 1 more epoch of fine-tuning
    dhp = budget_of("method=dhp", "method.epochs=4", "budget.epochs=5")
    assert (dhp.credit, dhp.phase_epochs) == (1.0, 3.0)
    assert dhp.finetune_for(4.0) == 2 and dhp.finetune_for(2.0) == 4


def test_a_search_that_does_not_plan_its_epochs_gets_what_it_leaves_of_the_total():
    from harness.method import Needs, SearchMethod

    class Opaque(SearchMethod):  # a plugin search: phase_epochs() is None
        needs = Needs(training=True)

        def search(self, ctx):
            raise NotImplementedError

    cfg = compose([*TINY, "method=l1", "compare.methods=[l1,sfp]"])
    load_configured(cfg)
    budget = plan_budget(cfg, Opaque(), lambda m: build_method(m, model="x", task="classification"))
    assert budget.total_epochs == 4.0  # 1 + sfp's 3
    assert budget.finetune_for(2.6) == 1  # measured when the search ends: 4 − 2.6, rounded


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["equal", "paper"])
def test_equal_budgets_see_equal_training_images(mode, tmp_path):
    # sfp: its configured 3 soft epochs; l1: none; 1 epoch of fine-tuning configured
    records = {
        m: run(compose([*TINY, f"method={m}", "compare.methods=[l1,sfp]", f"budget.mode={mode}",
                        f"outputs={tmp_path}", "target=0.5"]))
        for m in ("l1", "sfp")
    }  # fmt: skip
    images = 200 * 0.9  # the train split of the subset (val_fraction 0.1)
    l1, sfp = records["l1"], records["sfp"]
    assert l1["budget_mode"] == sfp["budget_mode"] == mode
    assert (l1["cost_search_epochs"], sfp["cost_search_epochs"]) == (0.0, 3.0)
    if mode == "equal":  # 1 + 3 epochs each: l1 fine-tunes all 4
        assert l1["budget_epochs"] == sfp["budget_epochs"] == 4.0
        assert (l1["finetune_epochs"], sfp["finetune_epochs"]) == (4, 1)
        assert abs(l1["cost_train_images"] - sfp["cost_train_images"]) <= images
    else:  # sfp sees 3 epochs of images more than l1
        assert l1["budget_epochs"] is None
        assert (l1["finetune_epochs"], sfp["finetune_epochs"]) == (1, 1)
        assert sfp["cost_train_images"] - l1["cost_train_images"] > images
