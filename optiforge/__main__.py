"""``python -m optiforge`` runs the CLI."""

from optiforge.cli import main

main()
