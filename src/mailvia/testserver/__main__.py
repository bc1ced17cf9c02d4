"""`python -m mailvia.testserver ...`: the same as `mailvia testserver ...`."""

from __future__ import annotations

import sys

from mailvia.testserver.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
