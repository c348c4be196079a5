"""``python -m distillset`` = the ``distillset`` command."""
from .cli.main import main

if __name__ == "__main__":  # not on import (pytest --doctest-modules imports every module)
    raise SystemExit(main())
