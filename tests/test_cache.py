"""The preparation cache: content-addressed entries, list and clear (API and CLI)."""
import pytest
import torch

from distillset.cache import cache_key, cached, clear_cache, is_cached, list_cache
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
    assert main(["cache", "clear", "--kind", "demp"]) == 2 and len(list_cache()) == 1  # a typo: refused
    assert "Did you mean 'demo'" in capsys.readouterr().err
    assert main(["cache", "clear", "--kind", "dd"]) == 0 and len(list_cache()) == 1  # a known kind, none there
    assert main(["cache", "clear"]) == 0 and list_cache() == [] and clear_cache() == 0


def test_files_the_cache_did_not_write_are_never_listed_or_cleared(tmp_path, monkeypatch):
    """A user's set copied into prepared/ was listed as kind '?' and deleted by `cache clear`."""
    from safetensors.torch import save_file

    from distillset.cache import prepared_folder

    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    cached("demo", {"epochs": 1}, lambda: {"x": torch.zeros(2)})
    mine = [prepared_folder() / "my_own_set.safetensors", prepared_folder() / f"demo-{'0' * 32}.safetensors"]
    save_file({"x": torch.ones(1)}, str(mine[0]))
    save_file({"x": torch.ones(1)}, str(mine[1]), metadata={"kind": "other"})  # our name form, not our file
    assert [e["kind"] for e in list_cache()] == ["demo"] and clear_cache() == 1 and all(p.is_file() for p in mine)


def test_an_entry_with_damaged_settings_is_listed_and_cleared(tmp_path, monkeypatch, capsys):
    """Its settings metadata not JSON: `cache list` was a JSONDecodeError traceback."""
    from safetensors.torch import save_file

    from distillset.cache import prepared_folder

    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    cached("demo", {"epochs": 1}, lambda: {"x": torch.zeros(2)})
    entry = next(prepared_folder().glob("demo-*.safetensors"))
    save_file({"x": torch.ones(1)}, str(entry), metadata={"kind": "demo", "settings": "{not json"})
    assert main(["cache", "list"]) == 0 and "damaged" in capsys.readouterr().out
    assert clear_cache() == 1 and not entry.exists()


def _image_folder(root):
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("L", (4, 4), 40 if c == "a" else 200).save(root / c / "0.png")


def test_decoded_image_folders_live_under_the_one_root(tmp_path, monkeypatch, capsys):
    from distillset.data.readers import read_image_folder

    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILLSET_CACHE_DIR", raising=False)
    _image_folder(tmp_path / "imgs")
    read_image_folder(tmp_path / "imgs")
    (tmp_path / "cache" / "decoded" / "mine.npz").write_bytes(b"a file of the user's")  # never listed or cleared
    [entry] = list_cache()
    assert entry["kind"] == "decoded" and entry["path"].startswith(str(tmp_path / "cache" / "decoded"))
    assert entry["settings"]["folder"] == str((tmp_path / "imgs").resolve())
    assert main(["cache", "list", "--kind", "decoded"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["cache", "clear", "--kind", "decoded"]) == 0 and list_cache() == []
    assert (tmp_path / "cache" / "decoded" / "mine.npz").is_file()


def test_the_old_decoded_cache_variable_still_works_with_a_warning(tmp_path, monkeypatch):
    from distillset.data.readers import cache_dir

    monkeypatch.setenv("DISTILLSET_CACHE_DIR", str(tmp_path / "old"))
    with pytest.warns(FutureWarning, match="DISTILLSET_CACHE_DIR is deprecated"):
        assert cache_dir() == tmp_path / "old"


def test_a_cache_that_cannot_keep_an_entry_warns_and_keeps_the_work(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path / "a-file"))  # not a folder: nothing can be stored
    with pytest.warns(UserWarning, match="Could not keep the prepared 'demo' in the cache"):
        out = cached("demo", {"epochs": 1}, lambda: {"x": torch.ones(2)})
    assert torch.equal(out["x"], torch.ones(2))


def test_a_damaged_entry_is_prepared_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    cached("demo", {"epochs": 1}, lambda: {"x": torch.ones(2)})
    [entry] = list_cache()
    with open(entry["path"], "r+b") as f:
        f.truncate(20)
    assert [(e["kind"], e["settings"]) for e in list_cache()] == [("demo", {"damaged": True})]
    assert not is_cached("demo", {"epochs": 1}) and not is_cached("demo", {"epochs": 2})
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        out = cached("demo", {"epochs": 1}, lambda: {"x": torch.full((2,), 3.0)})
    assert torch.equal(out["x"], torch.full((2,), 3.0))
    assert torch.equal(cached("demo", {"epochs": 1}, lambda: 1 / 0)["x"], out["x"])  # replaced: a hit again
    assert is_cached("demo", {"epochs": 1})
