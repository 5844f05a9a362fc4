"""`python -m curator` is the `curator` command."""

from .cli import main

main()
