"""``python -m pimserve``: the command line (same as the ``pimserve`` script)."""

from pimserve.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    main()
