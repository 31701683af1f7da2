"""``python -m cli`` = the ``ftq`` command."""

from cli.main import main

main()
