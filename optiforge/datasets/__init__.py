"""optiforge.datasets (see docs/DESIGN.md)."""
