"""Multi-task networks trained in a low-dimensional random subspace, and what that buys.

- ``expansions``: ``Expansion``, the fixed random map P from a subspace to a network's weights
  (Kronecker, sparse, dense), regenerated from a seed and applied without forming P.
- ``columns``: ``SubspaceColumns``, one column per task with theta_t = theta_0 + P (Q alpha_t), or
  one network for every task with theta = theta_0 + P w;
  ``freeze`` writes theta_t into plain columns for export.

The registered ``subspace`` architecture is in ``mtlzoo.architectures.subspace``.
"""

from mtlzoo.subspace.columns import SubspaceColumns, OutputSlice, find_columns, freeze
from mtlzoo.subspace.expansions import KINDS, Expansion

__all__ = ["KINDS", "Expansion", "SubspaceColumns", "OutputSlice", "find_columns", "freeze"]
