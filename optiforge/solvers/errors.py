"""Exception types of the solvers package."""

from __future__ import annotations

from optiforge.errors import OptiforgeError


class IRValidationError(OptiforgeError, ValueError):
    """A model IR is malformed: every problem found is listed, each naming its item.

    ``errors`` holds one line per problem, e.g. ``"constraint 'budget': unknown variable 'z'"``,
    so a formulator can feed them back to the model that wrote the IR.
    """

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        shown = "\n".join(f"- {e}" for e in self.errors[:20])
        more = f"\n- ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__(
            f"The model IR has {len(self.errors)} problem(s); fix them and try again:\n{shown}{more}"
        )


class SolverError(OptiforgeError):
    """A solver was requested that cannot handle the model, or is not available."""


class SandboxError(OptiforgeError):
    """The sandbox itself failed (not the program it ran): bad limits, pool closed, ..."""
