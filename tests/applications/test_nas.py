"""The architecture-search proxy: scipy's rank correlations, a perfect proxy scores 1, the real ranking cached."""
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from distillset import SyntheticSet, get_method
from distillset.applications import ArchitectureSearch, rank_correlations, search_space
from distillset.errors import DistillsetError


def test_rank_correlations_equal_scipy_on_a_fixed_table():
    real = [91.0, 85.5, 88.0, 70.2, 95.1, 60.0, 82.3, 79.9]
    proxy = [40.0, 42.0, 39.5, 30.0, 45.0, 33.0, 35.0, 36.5]
    r = rank_correlations(proxy, real, top=(5,))
    assert r["all"]["spearman"] == pytest.approx(spearmanr(proxy, real).statistic)
    assert r["all"]["kendall"] == pytest.approx(kendalltau(proxy, real).statistic)
    top = sorted(range(8), key=lambda i: -real[i])[:5]
    assert r["top5"]["spearman"] == pytest.approx(spearmanr([proxy[i] for i in top], [real[i] for i in top]).statistic)
    assert r["top5"]["n"] == 5 and "top10" not in r  # no top-k at or above the number of architectures
    same = rank_correlations(real, real, top=(5,))
    assert all(v["spearman"] == pytest.approx(1.0) and v["kendall"] == pytest.approx(1.0) for v in same.values())
    assert rank_correlations([-x for x in real], real)["all"]["spearman"] == pytest.approx(-1.0)


def test_a_proxy_that_scores_every_architecture_alike_has_no_correlation(tmp_path):
    """A constant list ranks nothing: NaN without scipy's warning, and null in the CLI's strict-JSON record."""
    import json
    import warnings

    from distillset.cli.applications import _write

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rank_correlations([10.0] * 6, [91.0, 85.5, 88.0, 70.2, 95.1, 60.0], top=(5,))
    assert all(v["spearman"] != v["spearman"] and v["kendall"] != v["kendall"] for v in r.values())  # NaN
    _write(tmp_path, "nas.json", {"correlations": r})
    text = (tmp_path / "nas.json").read_text()
    assert "NaN" not in text and json.loads(text)["correlations"]["all"] == {"spearman": None, "kendall": None, "n": 6}


def test_grids_are_model_specs_that_build():
    from distillset.models import get_model

    specs = search_space("cpu")
    assert len(set(specs)) == 24 and len(search_space("paper")) == 720
    for spec in specs[:3] + specs[-3:]:
        assert get_model(spec, (1, 8, 8), 10, seed=0)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_search_end_to_end_ranks_and_picks(digits, monkeypatch):
    data = digits.holdout(10)
    proxies = {"random": get_method("random", ipc=5, random_state=0).fit(data).synthetic_}
    grid = ["convnet(depth=1, width=8)", "convnet(depth=2, width=8)", "convnet(depth=1, width=16, act='sigmoid')"]
    nas = ArchitectureSearch(grid, epochs=5, full_epochs=1, full_per_class=30).fit(data, proxies)
    p = nas.proxies_["random"]
    assert len(p["val"]) == 3 and p["pick"] in grid and p["pick_real_test"] == nas.real_[p["pick"]]["test"]
    assert set(p["correlations"]) == {"all"} and nas.best_real_["architecture"] in grid
    # a second search with the same settings takes every real-data training from the cache
    monkeypatch.setattr(ArchitectureSearch, "_full", lambda self, data: pytest.fail("retrained on the real data"))
    again = ArchitectureSearch(grid, epochs=5, full_epochs=1, full_per_class=30).fit(data, proxies)
    assert again.real_ == nas.real_ and again.proxies_["random"]["val"] == p["val"]  # seeded: the same numbers


@pytest.mark.parametrize("proxy, real, top, message", [
    ([1, 2, 3], [1, 2], (5,), "got 3 and 2"),  # was truncated to the first 2 silently
    ([1], [1], (5,), "for at least 2; got 1 and 1"),
    ([1, float("nan"), 3], [1, 2, 3], (5,), "proxy must be a list of finite accuracies"),
    ([[1, 2], [3, 4]], [1, 2], (5,), "proxy must be a list of finite accuracies"),
    ([1, 2, 3], ["a", "b", "c"], (5,), "real must be a list of finite accuracies"),
    ([1, 2, 3], [1, 2, 3], 5, "top must be of type tuple or list, not int"),
    ([1, 2, 3], [1, 2, 3], (0,), "'top' parameter of rank_correlations must be an int >= 2"),
])
def test_rank_correlations_refuses_what_it_cannot_rank(proxy, real, top, message):
    with pytest.raises(DistillsetError) as e:
        rank_correlations(proxy, real, top=top)
    assert message in str(e.value) and "\n" not in str(e.value)


GRID = ["mlp", "lenet", "convnet(depth=1, width=4)"]


@pytest.mark.parametrize("grid, settings, proxies, message", [
    (GRID, {}, "list", "proxies must be of type dict, not list"),
    (GRID, {}, "set", "proxies must be of type dict, not SyntheticSet"),
    (["mlp", "lenet", "mlpp"], {}, "dict", "Unknown model 'mlpp'"),  # the last one: trained the others first
    (["mlp", "lenet", "mlp()"], {}, "dict", "lists mlp more than once"),
    ([1, 2, 3], {}, "dict", "a list of model specs (strings"),
    (GRID, {"device": "gpu"}, "dict", "'device' parameter must be"),
    (GRID, {"full_per_class": 1000}, "dict", "more than the smallest class of 'digits' holds besides"),
    (GRID, {}, "other-data", "not 'digits' (1, 8, 8); rank on its own data set (--dataset) or leave it out."),
])
def test_search_refuses_bad_settings_before_any_training(digits, grid, settings, proxies, message, monkeypatch):
    from distillset.evaluate import Evaluator

    data = digits.holdout(5)
    syn = get_method("random", ipc=1, random_state=0).fit(data).synthetic_
    other = SyntheticSet(syn.images, syn.labels, {**syn.meta, "dataset": "mnist"})
    given = {"list": [syn], "set": syn, "dict": {"random": syn}, "other-data": {"random": other}}[proxies]
    monkeypatch.setattr(Evaluator, "score", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(DistillsetError) as e:
        ArchitectureSearch(grid, **{"epochs": 1, "full_epochs": 1, "val_per_class": 5, **settings}).fit(data, given)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_search_space_refuses_a_list():
    with pytest.raises(DistillsetError, match="Unknown grid"):
        search_space(["convnet"])
