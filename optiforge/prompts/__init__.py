"""optiforge.prompts (see docs/DESIGN.md)."""
