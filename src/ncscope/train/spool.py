"""The perturbed-batch spool lives in :mod:`ncscope.collapse.spool` (used by the sweep)."""

from ncscope.collapse.spool import TensorSpool

__all__ = ["TensorSpool"]
