"""`python -m pag` is the same CLI as the `pag` console script (needed under torchrun)."""

from pag.cli import main

if __name__ == "__main__":
    main()
