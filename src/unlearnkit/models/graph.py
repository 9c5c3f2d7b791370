"""Graph neural networks for the graph track: GCN, GraphSAGE, GAT and SGC built from PyG layers.

One class, :class:`GNN`, serves both tasks: node classification (the last layer outputs class logits, float32
(n, C)) and link prediction (the last layer outputs node embeddings z, float32 (n, out_dim), scored by the dot
product decoder ``s(u, v) = z_u · z_v`` of GNNDelete's setting). Each message-passing layer can carry a GNNDelete
deletion operator (:class:`DeletionOperator`), identity for the nodes outside its mask.

torch_geometric is imported when a model is built (the ``[graph]`` extra).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from unlearnkit.data.graph import require_pyg
from unlearnkit.errors import ConfigError

Arch = Literal["gcn", "sage", "gat", "sgc"]


class DeletionOperator(nn.Module):
    """GNNDelete's layer-wise deletion operator DEL^l (Cheng et al., ICLR 2023, arXiv:2302.13406, Eq. 4).

    ``DEL(h)_i = h_i W_D`` for nodes i in ``mask`` (the l-hop enclosing subgraph of the deleted elements) and
    ``h_i`` otherwise. W_D is float32 (d, d), initialised to the identity so that an untrained operator leaves θ_o's
    representations unchanged (the reference code initialises it to ``ones/1000``, which scrambles the masked
    representations before training; we start from the identity instead).

    Args:
        dim: representation width d of the layer.  mask: bool (n,) nodes the operator acts on.
    """

    def __init__(self, dim: int, mask: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.register_buffer("mask", mask.bool().clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        idx = self.mask.nonzero().view(-1)
        if idx.numel() == 0:
            return h
        out = h.clone()
        out[idx] = h[idx] @ self.weight
        return out


class GNN(nn.Module):
    """A PyG message-passing network: ``num_layers`` convolutions (SGC: one ``SGConv`` with K hops).

    Args:
        arch: ``gcn`` (GCNConv, Kipf & Welling 2017), ``sage`` (SAGEConv, mean aggregation), ``gat`` (GATConv,
            ``heads`` attention heads in hidden layers), ``sgc`` (SGConv: Â^K X W, Wu et al. 2019).
        in_dim: input feature width d.  hidden: hidden width (GAT: total over heads).  out_dim: classes or
            embedding width.  dropout: on hidden representations (and GAT attention).  K: SGC propagation hops.
        bias: linear bias (certified removal needs ``sgc`` without bias).

    ``forward(x, edge_index)``: x float32 (n, d), edge_index int64 (2, m) → float32 (n, out_dim).
    """

    def __init__(self, arch: Arch, in_dim: int, hidden: int, out_dim: int, *, num_layers: int = 2,
                 dropout: float = 0.5, heads: int = 8, K: int = 2, bias: bool = True) -> None:
        super().__init__()
        require_pyg()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv, SGConv

        if num_layers < 1:
            raise ConfigError(f"num_layers must be ≥ 1, got {num_layers}")
        self.arch, self.dropout, self.K = arch, float(dropout), int(K)
        convs: list[nn.Module] = []
        if arch == "sgc":
            convs.append(SGConv(in_dim, out_dim, K=K, bias=bias))
            self.dims = [out_dim]
        else:
            dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
            for i in range(num_layers):
                a, b = dims[i], dims[i + 1]
                last = i == num_layers - 1
                if arch == "gcn":
                    convs.append(GCNConv(a, b, bias=bias))
                elif arch == "sage":
                    convs.append(SAGEConv(a, b, bias=bias))
                elif arch == "gat":
                    if last:
                        convs.append(GATConv(a, b, heads=1, dropout=dropout, bias=bias))
                    else:
                        if b % heads:
                            raise ConfigError(f"gat: hidden ({b}) must be a multiple of heads ({heads})")
                        convs.append(GATConv(a, b // heads, heads=heads, dropout=dropout, bias=bias))
                else:
                    raise ConfigError(f"unknown GNN architecture {arch!r}; valid: gcn, sage, gat, sgc")
            self.dims = dims[1:]
        self.convs = nn.ModuleList(convs)
        self.deletion: nn.ModuleList | None = None

    @property
    def hops(self) -> list[int]:
        """Receptive field (hops) of each layer's output: [1, 2, …] (SGC: [K])."""
        return [self.K] if self.arch == "sgc" else list(range(1, len(self.convs) + 1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, *, return_hidden: bool = False):
        """Outputs float32 (n, out_dim); with ``return_hidden`` also the list of each layer's output (before the
        activation, after the deletion operator)."""
        hs = []
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if self.deletion is not None:
                x = self.deletion[i](x)
            hs.append(x)
            if i < len(self.convs) - 1:
                x = nn.functional.elu(x) if self.arch == "gat" else torch.relu(x)
                x = nn.functional.dropout(x, p=self.dropout, training=self.training)
        return (x, hs) if return_hidden else x

    @staticmethod
    def decode(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Link scores (logits) float32 (k,) of node pairs int64 (2, k): ``z_u · z_v``."""
        return (z[pairs[0]] * z[pairs[1]]).sum(-1)

    def add_deletion_operators(self, masks: list[torch.Tensor]) -> None:
        """Insert one :class:`DeletionOperator` per layer (identity-initialised) acting on ``masks[l]``."""
        if len(masks) != len(self.convs):
            raise ConfigError(f"need one mask per layer ({len(self.convs)}), got {len(masks)}")
        self.deletion = nn.ModuleList(DeletionOperator(d, m) for d, m in zip(self.dims, masks))


def build_gnn(arch: Arch, in_dim: int, out_dim: int, *, hidden: int = 64, num_layers: int = 2, dropout: float = 0.5,
              heads: int = 8, K: int = 2, bias: bool = True, seed: int = 0) -> GNN:
    """A freshly initialised :class:`GNN`, seeded by ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GNN(arch, in_dim, hidden, out_dim, num_layers=num_layers, dropout=dropout, heads=heads, K=K, bias=bias)


def sgc_features(x: torch.Tensor, edge_index: torch.Tensor, K: int) -> torch.Tensor:
    """SGC's propagated features Â^K X with Â = D̃^{-1/2}(A + I)D̃^{-1/2} (PyG ``gcn_norm``), float32 (n, d).

    Equals the input of ``SGConv``'s linear layer: ``SGConv(x) = sgc_features(x) @ W^T + b``.
    """
    require_pyg()
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    n = x.shape[0]
    ei, w = gcn_norm(edge_index, None, n, add_self_loops=True, dtype=x.dtype)
    adj = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (n, n), check_invariants=False).coalesce()
    h = x
    for _ in range(K):
        h = torch.sparse.mm(adj, h)
    return h
