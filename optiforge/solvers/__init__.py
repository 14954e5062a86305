"""optiforge.solvers (see docs/DESIGN.md)."""
