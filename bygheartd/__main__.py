"""`python -m bygheartd` is the same as the `bygheartd` command."""

from bygheartd.cli import main

main()
