"""`python -m idspam.run [group=choice ...] [key=value ...]`: the Hydra runner (`idspam-run`); see `idspam.runner`."""

from .runner.app import main

if __name__ == "__main__":
    main()
