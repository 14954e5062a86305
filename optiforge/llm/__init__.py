"""optiforge.llm (see docs/DESIGN.md)."""
