"""optiforge.agents (see docs/DESIGN.md)."""
