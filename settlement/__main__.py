"""`python -m settlement ...`: the same commands as `gpux settlement ...`."""

from __future__ import annotations

import sys

from settlement.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
