"""The preparation cache: content-addressed entries, list and clear (API and CLI)."""
import torch

from distillset.cache import cache_key, cached, clear_cache, list_cache
from distillset.cli.main import main


def test_a_hit_does_not_build_a_changed_setting_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(4.0)}

    a = cached("demo", {"epochs": 1}, build)
    b = cached("demo", {"epochs": 1}, lambda: (_ for _ in ()).throw(AssertionError("built on a hit")))
    assert torch.equal(a["x"], b["x"])
    cached("demo", {"epochs": 2}, build)
    assert len(calls) == 2 and len(list_cache()) == 2
    assert cache_key("demo", {"epochs": 1}) != cache_key("demo", {"epochs": 2})


def test_cli_lists_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    cached("demo", {"epochs": 1}, lambda: {"x": torch.zeros(2)})
    assert main(["cache", "list"]) == 0 and "epochs=1" in capsys.readouterr().out
    assert main(["cache", "clear", "--kind", "other"]) == 0 and len(list_cache()) == 1
    assert main(["cache", "clear"]) == 0 and list_cache() == [] and clear_cache() == 0
