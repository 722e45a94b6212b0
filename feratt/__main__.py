"""`python -m feratt` runs the command line (and `torchrun -m feratt train ...` the distributed trainer)."""

from feratt.cli import main

main()
