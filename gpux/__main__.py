import sys

from gpux.cli import main

sys.exit(main())
