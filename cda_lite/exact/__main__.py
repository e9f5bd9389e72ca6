"""``python -m cda_lite.exact PROBLEM.json`` (see :mod:`cda_lite.exact.cli`)."""
from cda_lite.exact.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
