"""`python -m bygheartd` is the same as the `bygheartd` command."""

from bygheartd.cli.main import main

main()
