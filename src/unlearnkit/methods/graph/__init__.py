"""Graph unlearning methods (track ``graph``): retrain, gradient ascent, GNNDelete, D2DGN, GIF, certified SGC
removal, GraphEraser. Light at import time: torch_geometric loads when a model or data set is built."""

from unlearnkit.methods.graph import certified, d2dgn, gif, gnndelete, grad_ascent, graph_eraser, retrain  # noqa: F401
