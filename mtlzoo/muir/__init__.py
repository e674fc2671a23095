"""Modular universal reparameterization (MUiR; Meyerson & Miikkulainen, NeurIPS 2019).

- ``hypermodules``: the ``HypermoduleBank`` layer (hypermodules, contexts, assignment) and the
  ``Reparameterized`` wrapper; block helpers (``split``, ``assemble``, ``block_count``).
- ``reparameterize``: ``reparameterize`` / ``MuirModel`` over any Keras models; inspection
  (``find_bank``, ``sharing``, ``sharing_summary``) and ``freeze`` for both kinds of MUiR model.
- ``search``: ``AlignmentSearch``, the callback that decides which hypermodule makes each block.

The registered ``muir`` architecture (one functional model) is in ``mtlzoo.architectures.muir``.
"""

from mtlzoo.muir.hypermodules import (
    REPARAMETERIZED, HypermoduleBank, Reparameterized, assemble, block_count, call_with, he_context, split,
)
from mtlzoo.muir.reparameterize import (
    BlockSlot, MuirModel, block_slots, find_bank, freeze, plan_blocks, reparameterize, sharing, sharing_summary,
)
from mtlzoo.muir.search import AlignmentSearch

__all__ = [
    "REPARAMETERIZED", "AlignmentSearch", "BlockSlot", "HypermoduleBank", "MuirModel", "Reparameterized", "assemble",
    "block_count", "block_slots", "call_with", "find_bank", "freeze", "he_context", "plan_blocks", "reparameterize",
    "sharing", "sharing_summary", "split",
]
