"""The typed record of one benchmark problem, and the dataset error type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from optiforge.errors import OptiforgeError

#: What a ground truth says: an objective ``value``, that the problem is ``infeasible``
#: (or unbounded: no optimal value exists), or ``missing`` (no usable ground truth).
AnswerKind = Literal["value", "infeasible", "missing"]


class DatasetError(OptiforgeError):
    """A dataset file is missing or malformed, or a filter or answer field is unknown.

    The message names the file, the line (1-based) and the field when they are known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f", line {line}"
            if field is not None:
                where += f", field {field!r}"
            where += ": "
        elif field is not None:
            where = f"field {field!r}: "
        super().__init__(where + message)


class AnswerVariant(BaseModel):
    """One published ground truth for a problem.

    ``text`` is set when the answer belongs to an edited version of the problem text (for
    example ReSocratic's NL4OPT-E edits); evaluating against this variant then uses it.
    """

    model_config = ConfigDict(frozen=True)

    value: float | None = None
    kind: AnswerKind = "missing"
    raw: Any = None
    text: str | None = None


class Problem(BaseModel):
    """One optimization word problem with its ground truth and category fields.

    ``answer``/``answer_kind`` come from the answer variant named by ``answer_field``
    (``"answer"``, the dataset's recommended ground truth, unless another was chosen);
    every variant stays available in ``answers``. ``text`` is the variant's text when the
    variant answers an edited text, else the original question.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    answer: float | None = None
    answer_kind: AnswerKind = "missing"
    answer_field: str = "answer"
    answers: dict[str, AnswerVariant] = Field(default_factory=dict)
    #: How confident the dataset is in ``answers["answer"]`` (e.g. NL4Opt ``agreed``).
    answer_status: str | None = None
    problem_type: str | None = None  # "linear" / "nonlinear"
    has_table: bool | None = None
    #: Extra labels usable with the category filter (e.g. ``orlm245``, ``llm4or-clean``).
    tags: tuple[str, ...] = ()
    notes: str | None = None
    source: str | None = None
    #: Name of the dataset the problem came from (``nl4opt``, ``optibench``, or a file stem).
    dataset: str = ""
    #: The original question when ``text`` is an edited version belonging to the answer variant.
    original_text: str | None = None
    #: The remaining fields of the original record (gold formulations, cross references...).
    extra: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def category(self) -> str:
        """Coarse category used in reports: ``linear/table``, ``nonlinear/no-table``, ..."""
        kind = self.problem_type or "unknown"
        if self.has_table is None:
            return kind
        return f"{kind}/{'table' if self.has_table else 'no-table'}"

    @property
    def labels(self) -> set[str]:
        """Every label the category filter can match (type, table, tags, answer kind)."""
        out = set(self.tags)
        if self.problem_type:
            out.add(self.problem_type)
        if self.has_table is not None:
            out.add("table" if self.has_table else "no-table")
        out.add(f"answer-{self.answer_kind}")
        if self.answer_status:
            out.add(self.answer_status)
        return out

    @property
    def scorable(self) -> bool:
        """True when the problem has a usable ground truth (a value, or infeasible)."""
        return self.answer_kind != "missing"

    def with_answer_field(self, name: str) -> Problem:
        """Return a copy graded against the answer variant ``name`` (see ``answers``)."""
        variant = self.answers.get(name)
        if variant is None:
            variant = AnswerVariant()
        original = self.original_text or self.text
        text = variant.text or original
        return self.model_copy(
            update={
                "answer": variant.value,
                "answer_kind": variant.kind,
                "answer_field": name,
                "text": text,
                "original_text": original if text != original else None,
            }
        )
