"""`python -m mailvia`: the same as the `mailvia` command."""

from mailvia.app import main

main()
