"""optiforge.trace (see docs/DESIGN.md)."""
