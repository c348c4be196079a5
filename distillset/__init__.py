"""distillset: dataset distillation (condensation) in PyTorch.

>>> import distillset
>>> data = distillset.load_dataset("digits")
>>> dm = distillset.get_method("dm", ipc=1, iterations=2, batch_real=8, random_state=0, progress=False, device="cpu")
>>> syn = dm.fit(data).synthetic_
>>> tuple(syn.images.shape)
(10, 1, 8, 8)
"""
import importlib

__version__ = "0.1.0"

# public name -> submodule. Imported on first use (PEP 562), so `distillset --help` and the error
# types load without torch, which takes seconds to import.
_LAZY = {"list_datasets": "data", "load_dataset": "data", "EvalResult": "evaluate", "Evaluator": "evaluate",
         "evaluate": "evaluate", "get_method": "methods", "list_methods": "methods", "get_model": "models",
         "list_models": "models", "SyntheticSet": "synthetic"}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'distillset' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    # `evaluate` is the module itself, callable as its function (distillset/evaluate.py says why)
    value = module if name == _LAZY[name] else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
