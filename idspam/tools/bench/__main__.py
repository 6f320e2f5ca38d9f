"""`python -m idspam.tools.bench` (what the step benchmark's memory subprocesses run)."""

from .main import main

main()
