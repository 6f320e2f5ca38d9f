"""`idspam-bench`: the benchmarks (training step, decode, end to end), each a module here; `main.py` is the
command line."""


def main(argv=None):
    from .main import main as run

    return run(argv)
