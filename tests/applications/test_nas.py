"""The architecture-search proxy: scipy's rank correlations, a perfect proxy scores 1, the real ranking cached."""
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from distillset import get_method
from distillset.applications import ArchitectureSearch, rank_correlations, search_space


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
