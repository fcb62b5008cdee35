"""`python -m archiver` is the same as the `archiver` console script."""

from archiver.cli import main

main()
