"""``python -m tracerflow.cli``: the same as the ``tracerflow`` script."""

from tracerflow.cli import main

main()
