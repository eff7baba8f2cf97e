"""`python -m distilkit ...` (also what `torchrun -m distilkit` runs)."""

from distilkit.cli import main

main()
