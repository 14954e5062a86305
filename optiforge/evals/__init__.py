"""optiforge.evals (see docs/DESIGN.md)."""
