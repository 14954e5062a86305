"""optiforge.trace: record Python workflows as graphs and propagate feedback through them.

Quick use::

    from optiforge.trace import Module, bundle, node

    class Agent(Module):
        def __init__(self):
            self.offset = node(1, trainable=True, description="added at the end")

        @bundle(trainable=True)
        def scale(self, x):
            '''Multiply x.'''
            return x * 2

        def forward(self, x):
            return self.scale(x) + self.offset

    y = Agent()(node(3))                 # y.value == 7
    y.backward("The output should be 14.")

See docs/trace.md for the full API. This package imports the standard library only;
networkx is imported inside :func:`to_networkx`.
"""

from optiforge.trace.bundle import BoundBundle, Bundle, CodeParameter, bundle, function_source
from optiforge.trace.context import is_tracing, no_trace, tracing
from optiforge.trace.errors import (
    BundleError,
    CodeError,
    ExecutionError,
    FeedbackError,
    GraphCycleError,
    SerializationError,
    TraceError,
    ValueTypeError,
)
from optiforge.trace.export import (
    graph_to_dict,
    load_graph,
    save_graph,
    to_dot,
    to_html,
    to_mermaid,
    to_networkx,
)
from optiforge.trace.feedback import (
    FeedbackRecord,
    GraphPropagator,
    Propagator,
    Subgraph,
    backward,
    combine_feedback,
    feedback_subgraphs,
    topological_order,
)
from optiforge.trace.module import Module
from optiforge.trace.nodes import (
    ExceptionNode,
    MessageNode,
    Node,
    Op,
    ParameterNode,
    coerce_value,
    is_node,
    node,
    value_of,
)
from optiforge.trace.render import assign_names

__all__ = [
    "BoundBundle",
    "Bundle",
    "BundleError",
    "CodeError",
    "CodeParameter",
    "ExceptionNode",
    "ExecutionError",
    "FeedbackError",
    "FeedbackRecord",
    "GraphCycleError",
    "GraphPropagator",
    "MessageNode",
    "Module",
    "Node",
    "Op",
    "ParameterNode",
    "Propagator",
    "SerializationError",
    "Subgraph",
    "TraceError",
    "ValueTypeError",
    "assign_names",
    "backward",
    "bundle",
    "coerce_value",
    "combine_feedback",
    "feedback_subgraphs",
    "function_source",
    "graph_to_dict",
    "is_node",
    "is_tracing",
    "load_graph",
    "no_trace",
    "node",
    "save_graph",
    "to_dot",
    "to_html",
    "to_mermaid",
    "to_networkx",
    "topological_order",
    "tracing",
    "value_of",
]
