"""``python -m taskcast.cli`` runs the ``taskcast`` command."""

from ._main import main

main()
