"""Benchmarks shipped with optiforge (NL4Opt, OptiBench) and user files, as typed records.

>>> from optiforge.datasets import load_dataset
>>> problems = load_dataset("nl4opt", category="linear", limit=5)

See ``docs/datasets.md`` and ``optiforge/datasets/data/README.md`` (sources, licences).
This package imports nothing above it (no agents, no LLM, no solvers).
"""

from __future__ import annotations

from optiforge.datasets.loader import (
    ANSWER_FIELDS,
    BUILTIN_DATASETS,
    count_unscorable,
    load_dataset,
    parse_answer,
    read_id_list,
)
from optiforge.datasets.problem import AnswerKind, AnswerVariant, DatasetError, Problem

__all__ = [
    "ANSWER_FIELDS",
    "BUILTIN_DATASETS",
    "AnswerKind",
    "AnswerVariant",
    "DatasetError",
    "Problem",
    "count_unscorable",
    "load_dataset",
    "parse_answer",
    "read_id_list",
]
