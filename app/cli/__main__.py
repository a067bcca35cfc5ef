"""`python -m app.cli ...` is the same as the `sparq` command."""

from app.cli import main

main()
