"""`python -m harness up|down|status|install`."""

from __future__ import annotations

import sys

from harness.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
