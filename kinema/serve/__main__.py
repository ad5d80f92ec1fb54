"""`python -m kinema.serve ...`: the same as `kinema serve ...`."""

from .cli import main

main()
