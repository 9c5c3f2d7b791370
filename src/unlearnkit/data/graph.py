"""Graph data for the graph track: Planetoid (Cora, CiteSeer) from a local root, any PyG ``Data``, a seeded synthetic
stochastic block model; stable ids of edges, nodes and node features; deletion scenarios; split invariants.

Stable ids (DESIGN §4: "sample ids are stable integers from the source data set"):

- **node id** = the node's index in the source graph (PyG's row of ``x``).
- **edge id** = the row of the undirected edge ``(u, v)``, ``u < v``, in the lexicographically sorted list of the
  source graph's unique undirected edges (self-loops dropped). One id covers both directions ``u→v`` and ``v→u``.
- **node-feature id** = the node id whose feature row is deleted.

Deletion targets and what the retain graph (D_r) is (:meth:`GraphTask.view`):

- ``edge``: the deleted undirected edges are absent from the retain graph in both directions.
- ``node``: the deleted nodes keep their index (ids stay stable) but lose every incident edge, their feature row
  (zeroed) and their label; they are isolated and never trained on.
- ``feature``: the deleted nodes' feature rows are zeroed and their labels dropped from training (Chien et al.
  2022, arXiv:2206.09140 §3 "node feature unlearning"); their edges stay.

Scenarios: ``random`` (uniform draw) or ``targeted`` (GNNDelete-style hard case: the edges of the highest-degree
nodes, or the highest-degree nodes themselves).

torch_geometric is the ``[graph]`` extra: it is imported inside functions, and a missing install raises
``ConfigError("... pip install 'unlearnkit[graph]'")``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from unlearnkit.errors import ConfigError, DataError

Target = Literal["edge", "node", "feature"]
TaskKind = Literal["node", "link"]
Which = Literal["original", "retain"]

PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}


def require_pyg() -> Any:
    """Import torch_geometric or raise ``ConfigError`` naming the extra to install."""
    try:
        import torch_geometric
    except ModuleNotFoundError as err:  # pragma: no cover - the dev venv has it
        raise ConfigError("the graph track needs torch_geometric (and scipy for Planetoid files): "
                          "pip install 'unlearnkit[graph]'") from err
    return torch_geometric


# ---------------------------------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class GraphData:
    """A node-labelled undirected graph with stable ids.

    Attributes:
        name: data set name.
        x: float32 (n, d) node features.
        y: int64 (n,) node labels (−1 = unlabelled).
        edges: int64 (E, 2) unique undirected edges, ``u < v``, sorted; the row is the edge id.
        train_nodes, val_nodes, test_nodes: int64 node ids of the node-classification split.
        num_classes: number of label classes.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    edges: np.ndarray
    train_nodes: np.ndarray
    val_nodes: np.ndarray
    test_nodes: np.ndarray
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        """Undirected edges E (the directed ``edge_index`` has 2E columns)."""
        return int(len(self.edges))

    def degree(self, edge_ids: np.ndarray | None = None) -> np.ndarray:
        """int64 (n,) node degrees in the graph of ``edge_ids`` (default: all edges)."""
        e = self.edges if edge_ids is None else self.edges[edge_ids]
        return np.bincount(e.reshape(-1), minlength=self.num_nodes).astype(np.int64)

    def edge_ids_of(self, pairs: np.ndarray) -> np.ndarray:
        """Edge ids of node pairs (k, 2) in either direction; −1 where the pair is not an edge."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        n = self.num_nodes
        q = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
        keys = self.edges[:, 0] * n + self.edges[:, 1]
        if len(keys) == 0:
            return np.full(len(q), -1, np.int64)
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[pos] == q, pos, -1).astype(np.int64)


def edge_index_of(edges: np.ndarray) -> torch.Tensor:
    """int64 (2, 2k) directed ``edge_index`` (both directions) of undirected edges (k, 2)."""
    e = torch.from_numpy(np.ascontiguousarray(edges, dtype=np.int64)).reshape(-1, 2)
    return torch.cat([e.t(), e.flip(1).t()], dim=1).contiguous()


def _undirected(edge_index: np.ndarray, n: int) -> np.ndarray:
    u, v = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    keep = u != v
    a, b = np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])
    keys = np.unique(a * n + b)
    return np.stack([keys // n, keys % n], axis=1).astype(np.int64)


FeatureNorm = Literal["l1", "standard_maxnorm", "none"]


def normalize_x(x: torch.Tensor, how: FeatureNorm | bool) -> torch.Tensor:
    """Feature preprocessing: ``l1`` rows sum to 1 (PyG ``NormalizeFeatures``); ``standard_maxnorm`` standardise
    columns then divide by the largest row L2 norm, so max ‖x_i‖₂ = 1 (Chien et al. 2022's ``preprocess_data``, the
    certified-removal setting); ``none`` unchanged. float32 (n, d) in and out."""
    if how is True or how == "l1":
        return x / x.abs().sum(1, keepdim=True).clamp_min(1e-12)
    if how == "standard_maxnorm":
        z = (x.double() - x.double().mean(0)) / x.double().std(0, unbiased=False).clamp_min(1e-12)
        return (z / z.norm(dim=1).max().clamp_min(1e-12)).float()
    if how is False or how == "none":
        return x
    raise ConfigError(f"feature normalisation must be l1, standard_maxnorm or none, got {how!r}")


def from_pyg(data: Any, name: str = "graph", *, normalize_features: FeatureNorm | bool = "l1", split_seed: int = 0,
             test_fraction: float = 0.2, val_fraction: float = 0.1) -> GraphData:
    """A :class:`GraphData` from any PyG ``Data`` (``x``, ``edge_index``; optional ``y`` and ``train/val/test_mask``).

    Directed edges are symmetrised (``u→v`` and ``v→u`` become one undirected edge id), self-loops dropped.
    Without masks, a seeded random split (``test_fraction``, ``val_fraction`` of the labelled nodes) is drawn.

    Args:
        normalize_features: :func:`normalize_x` mode (``l1`` default; ``standard_maxnorm`` for certified removal).

    Raises:
        DataError: no ``x`` / ``edge_index``, an edge naming a node outside ``0..n−1``, or labels of wrong length.
    """
    x = getattr(data, "x", None)
    ei = getattr(data, "edge_index", None)
    if x is None or ei is None:
        raise DataError(f"graph {name!r} needs node features x (n, d) and edge_index (2, m); got x={x is not None}, "
                        f"edge_index={ei is not None}")
    x = torch.as_tensor(x).float()
    if x.dim() != 2:
        raise DataError(f"graph {name!r}: x must be (n, d), got shape {tuple(x.shape)}")
    n = int(x.shape[0])
    ei = torch.as_tensor(ei).long()
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise DataError(f"graph {name!r}: edge_index must be (2, m), got shape {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DataError(f"graph {name!r}: edge_index names node {int(ei.max())} but x has {n} rows")
    y = getattr(data, "y", None)
    y = torch.full((n,), -1, dtype=torch.long) if y is None else torch.as_tensor(y).long().reshape(-1)
    if len(y) != n:
        raise DataError(f"graph {name!r}: y has {len(y)} labels for {n} nodes")
    x = normalize_x(x, normalize_features)
    edges = _undirected(ei.numpy(), n)
    masks = [getattr(data, k, None) for k in ("train_mask", "val_mask", "test_mask")]
    if all(m is not None for m in masks):
        tr, va, te = (np.flatnonzero(torch.as_tensor(m).numpy()).astype(np.int64) for m in masks)
    else:
        labelled = np.flatnonzero(y.numpy() >= 0)
        g = np.random.default_rng(split_seed)
        perm = g.permutation(labelled)
        n_te, n_va = int(round(test_fraction * len(perm))), int(round(val_fraction * len(perm)))
        te, va, tr = np.sort(perm[:n_te]), np.sort(perm[n_te:n_te + n_va]), np.sort(perm[n_te + n_va:])
    num_classes = int(y.max()) + 1 if (y >= 0).any() else 0
    return GraphData(name, x.contiguous(), y, edges, tr, va, te, num_classes)


def load_planetoid(name: str = "cora", root: str | Path | None = None, *, download: bool = False,
                   split: Literal["full", "public"] = "full", normalize_features: FeatureNorm | bool = "l1") -> GraphData:
    """Planetoid Cora / CiteSeer / PubMed through ``torch_geometric.datasets.Planetoid``.

    ``root`` holds ``<Name>/raw/ind.<name>.*`` (the kimiyoung/planetoid files). The folder is copied to a temporary
    directory first, because PyG writes ``<Name>/processed/`` next to the raw files and shared roots are read-only.
    ``split="full"`` trains on every node outside the 500 validation and 1,000 test nodes (1,208 on Cora; the
    setting of Chien et al. 2022), ``"public"`` on the 140 labelled nodes of Yang et al. 2016.

    Raises:
        ConfigError: unknown name, or torch_geometric missing.
        DataError: the raw files are absent and ``download`` is false.
    """
    require_pyg()
    from torch_geometric.datasets import Planetoid

    key = name.lower()
    if key not in PLANETOID:
        raise ConfigError(f"unknown Planetoid data set {name!r}; valid: {', '.join(PLANETOID)}")
    pyg_name = PLANETOID[key]
    tmp = Path(tempfile.mkdtemp(prefix="unlearnkit-planetoid-"))
    try:
        src = Path(root) / pyg_name if root is not None else None
        if src is not None and (src / "raw").is_dir():
            shutil.copytree(src, tmp / pyg_name)  # PyG writes processed/ next to raw/: never into the given root
            where = tmp
        elif download:
            where = Path(root) if root is not None else tmp  # the user's (writable) root keeps the download
        elif src is not None:
            raise DataError(f"no Planetoid files at {src}/raw (expected ind.{key}.x, .y, .graph ...); put the "
                            f"kimiyoung/planetoid files there or set download: true")
        else:
            raise DataError(f"Planetoid {pyg_name} needs a local root (data.root) or download: true")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ds = Planetoid(str(where), pyg_name, split=split)  # silence PyG's "Processing... Done!"
        except (OSError, RuntimeError) as err:
            raise DataError(f"could not load Planetoid {pyg_name} from {where}: {err}") from err
        data = ds[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return from_pyg(data, key, normalize_features=normalize_features)


def synthetic_graph(num_nodes: int = 120, num_classes: int = 3, num_features: int = 16, p_in: float = 0.12,
                    p_out: float = 0.01, feature_noise: float = 1.0, seed: int = 0,
                    normalize_features: FeatureNorm | bool = "l1") -> GraphData:
    """A seeded stochastic block model: class-correlated Gaussian features, homophilous edges (tests, demos).

    Node i has class ``i % num_classes``; an edge (u, v) exists with probability ``p_in`` inside a class and
    ``p_out`` across; features are |e_{class}·2 + N(0, feature_noise²)| (then :func:`normalize_x`).
    Split: 60 % train, 20 % validation, 20 % test nodes (seeded).
    """
    g = np.random.default_rng(seed)
    y = np.arange(num_nodes) % num_classes
    iu, iv = np.triu_indices(num_nodes, k=1)
    p = np.where(y[iu] == y[iv], p_in, p_out)
    keep = g.random(len(iu)) < p
    edges = np.stack([iu[keep], iv[keep]], axis=1).astype(np.int64)
    x = g.normal(scale=feature_noise, size=(num_nodes, num_features))
    x[np.arange(num_nodes), y % num_features] += 2.0
    x = np.abs(x).astype(np.float32)
    perm = g.permutation(num_nodes)
    n_te, n_va = num_nodes // 5, num_nodes // 5
    te, va, tr = np.sort(perm[:n_te]), np.sort(perm[n_te:n_te + n_va]), np.sort(perm[n_te + n_va:])
    xt = normalize_x(torch.from_numpy(x), normalize_features)
    return GraphData("synthetic", xt, torch.from_numpy(y.astype(np.int64)), edges, tr.astype(np.int64),
                     va.astype(np.int64), te.astype(np.int64), num_classes)


# ---------------------------------------------------------------------------------------------------------------------
# the task: split + deletion
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class GraphView:
    """What a model sees of the graph: the original (D) or the retain graph (D_r).

    Attributes:
        x: float32 (n, d) features (deleted nodes' / features' rows zeroed in the retain view).
        edge_index: int64 (2, 2m) directed training graph (both directions of each undirected edge).
        edge_ids: int64 (m,) undirected edge ids present.
        train_nodes: int64 labelled nodes whose labels are trained on (node task).
        alive: bool (n,) nodes that exist (deleted nodes are False in the retain view).
        ids: int64 ids of the deletion target's kind that this view trains on (edge, node or node-feature ids).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_ids: np.ndarray
    train_nodes: np.ndarray
    alive: np.ndarray
    ids: np.ndarray


@dataclass
class GraphTask:
    """A graph, a learning task on it and a deletion request (D_f); the track's task.

    Attributes:
        name: data set name.  data: the :class:`GraphData`.
        task: ``node`` (node classification) or ``link`` (link prediction, dot-product decoder).
        target: ``edge``, ``node`` or ``feature``.
        train_edge_ids: int64 undirected edges the model may train on (all edges for the node task; the link task
            holds out ``test_pos``).
        candidates: int64 ids D is made of (edge ids for ``edge``; node ids otherwise).
        forget: int64 sorted ids of D_f (of the target's kind).
        test_pos, test_neg: int64 (k, 2) held-out edges and non-edges (link task; empty otherwise).
        scenario: JSON-serialisable record of how D_f was drawn.
    """

    name: str
    data: GraphData
    task: TaskKind
    target: Target
    train_edge_ids: np.ndarray
    candidates: np.ndarray
    forget: np.ndarray
    test_pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    test_neg: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    scenario: dict[str, Any] = field(default_factory=dict)

    # -- TrackTask protocol -------------------------------------------------------------------------------------
    @property
    def train_ids(self) -> np.ndarray:
        return self.view("original").ids

    @property
    def forget_ids(self) -> np.ndarray:
        return self.forget

    @property
    def retain_ids(self) -> np.ndarray:
        return self.view("retain").ids

    # -- derived sets -------------------------------------------------------------------------------------------
    @property
    def forget_nodes(self) -> np.ndarray:
        """Nodes deleted (``node``) or whose features are deleted (``feature``); empty for ``edge``."""
        return self.forget if self.target != "edge" else np.zeros(0, np.int64)

    @property
    def removed_edge_ids(self) -> np.ndarray:
        """Undirected training edges absent from the retain graph: D_f (edge) or the deleted nodes' edges (node)."""
        if self.target == "edge":
            return self.forget
        if self.target == "node":
            e = self.data.edges[self.train_edge_ids]
            hit = np.isin(e[:, 0], self.forget) | np.isin(e[:, 1], self.forget)
            return np.sort(self.train_edge_ids[hit])
        return np.zeros(0, np.int64)

    @property
    def anchor_nodes(self) -> np.ndarray:
        """Nodes where the deletion happens: endpoints of deleted edges, or the deleted nodes / feature rows."""
        if self.target == "edge":
            return np.unique(self.data.edges[self.forget].reshape(-1))
        return np.asarray(self.forget, np.int64)

    def view(self, which: Which) -> GraphView:
        """The original graph D (``"original"``) or the retain graph D_r (``"retain"``); cached."""
        cache = self.__dict__.setdefault("_views", {})
        if which in cache:
            return cache[which]
        d = self.data
        x = d.x
        alive = np.ones(d.num_nodes, bool)
        edge_ids = self.train_edge_ids
        train_nodes = d.train_nodes
        if which == "retain":
            if self.target == "edge":
                edge_ids = np.setdiff1d(edge_ids, self.forget)
            else:
                x = x.clone()
                x[torch.from_numpy(self.forget)] = 0.0
                train_nodes = np.setdiff1d(train_nodes, self.forget)
                if self.target == "node":
                    alive[self.forget] = False
                    edge_ids = np.setdiff1d(edge_ids, self.removed_edge_ids)
        elif which != "original":
            raise ConfigError(f"view must be 'original' or 'retain', got {which!r}")
        if self.target == "edge":
            ids = edge_ids
        elif self.task == "node":
            ids = train_nodes
        else:  # link task, node / feature target: the nodes whose features (and edges) are trained on
            ids = self.candidates if which == "original" else np.setdiff1d(self.candidates, self.forget)
        v = GraphView(x, edge_index_of(d.edges[edge_ids]), np.asarray(edge_ids, np.int64),
                      np.asarray(train_nodes, np.int64), alive, np.asarray(ids, np.int64))
        cache[which] = v
        return v

    def train_pairs(self, which: Which) -> np.ndarray:
        """int64 (m, 2) positive training pairs of the link task: the view's undirected edges."""
        return self.data.edges[self.view(which).edge_ids]

    def khop_nodes(self, hops: int, which: Which = "original") -> np.ndarray:
        """int64 nodes within ``hops`` hops of :attr:`anchor_nodes` in the ``which`` graph (anchors included)."""
        e = self.data.edges[self.view(which).edge_ids]
        reach = np.zeros(self.data.num_nodes, bool)
        reach[self.anchor_nodes] = True
        for _ in range(hops):
            nxt = reach.copy()
            nxt[e[reach[e[:, 0]], 1]] = True
            nxt[e[reach[e[:, 1]], 0]] = True
            reach = nxt
        return np.flatnonzero(reach).astype(np.int64)


def _draw(candidates: np.ndarray, k: int, scenario: str, score: np.ndarray | None, g: np.random.Generator) -> np.ndarray:
    if scenario == "random":
        return np.sort(g.choice(candidates, size=k, replace=False))
    # targeted: highest score first, ties broken at random
    order = np.lexsort((g.random(len(candidates)), -score))
    return np.sort(candidates[order[:k]])


def build_graph_task(data: GraphData, *, task: TaskKind = "node", target: Target = "edge",
                     scenario: Literal["random", "targeted"] = "random", fraction: float | None = None,
                     count: int | None = None, seed: int = 0, test_edge_fraction: float = 0.1,
                     split_seed: int = 0) -> GraphTask:
    """Split ``data`` for ``task`` and draw D_f; the invariants are checked (:func:`check_graph_task`).

    - node task: every edge is a training edge; D for ``node``/``feature`` targets = the training nodes.
    - link task: ``test_edge_fraction`` of the edges (seeded by ``split_seed``) are held out as test positives with
      as many sampled non-edges as test negatives; D for ``node``/``feature`` targets = all nodes.
    - ``targeted``: edges ranked by the larger endpoint degree, nodes by degree (highest first).

    Args:
        fraction: 0 < f < 1 of D, or ``count``: 1 ≤ k < |D| (exactly one of them).

    Raises:
        ConfigError: both or neither of fraction / count, or a value out of range; unknown task/target/scenario.
        DataError: the node task on an unlabelled graph; a split that leaves nothing to train or test on.
    """
    if task not in ("node", "link") or target not in ("edge", "node", "feature"):
        raise ConfigError(f"task must be node or link and target edge, node or feature; got {task!r}, {target!r}")
    if scenario not in ("random", "targeted"):
        raise ConfigError(f"graph scenario must be random or targeted, got {scenario!r}")
    if (fraction is None) == (count is None):
        raise ConfigError("the deletion needs exactly one of 'fraction' (0 < f < 1) or 'count' (k ≥ 1)")
    if task == "node" and data.num_classes < 2:
        raise DataError(f"graph {data.name!r} has no node labels (or one class); use task: link")
    g_split = np.random.default_rng(split_seed)
    all_edges = np.arange(data.num_edges, dtype=np.int64)
    test_pos = test_neg = np.zeros((0, 2), np.int64)
    if task == "link":
        if not 0 < test_edge_fraction < 1:
            raise ConfigError(f"test_edge_fraction must be in (0, 1), got {test_edge_fraction}")
        perm = g_split.permutation(all_edges)
        n_te = max(1, int(round(test_edge_fraction * len(perm))))
        test_ids = np.sort(perm[:n_te])
        train_edge_ids = np.sort(perm[n_te:])
        test_pos = data.edges[test_ids]
        test_neg = sample_non_edges(data, n_te, g_split)
    else:
        train_edge_ids = all_edges
    if target == "edge":
        candidates = train_edge_ids
        deg = data.degree(train_edge_ids)
        e = data.edges[candidates]
        score = np.maximum(deg[e[:, 0]], deg[e[:, 1]]).astype(float)
    else:
        candidates = data.train_nodes if task == "node" else np.arange(data.num_nodes, dtype=np.int64)
        score = data.degree(train_edge_ids)[candidates].astype(float)
    n = len(candidates)
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ConfigError(f"deletion fraction must be strictly between 0 and 1, got {fraction}")
        k = int(round(fraction * n))
    else:
        k = int(count)  # type: ignore[arg-type]
    if not 1 <= k < n:
        raise ConfigError(f"the deletion must remove between 1 and {n - 1} {target}s of {n}; got {k} "
                          f"(fraction={fraction}, count={count})")
    forget = _draw(candidates, k, scenario, score, np.random.default_rng(seed)).astype(np.int64)
    t = GraphTask(data.name, data, task, target, train_edge_ids, candidates, forget, test_pos, test_neg)
    t.scenario = {"kind": f"{target}-{scenario}", "target": target, "selection": scenario, "task": task,
                  "fraction": fraction, "count": count, "seed": seed, "n_forget": int(k),
                  "n_retain": int(len(t.retain_ids)),
                  "n_test": int(len(test_pos) if task == "link" else len(data.test_nodes)),
                  "n_nodes": data.num_nodes, "n_edges": data.num_edges, "labels_available": task == "node"}
    check_graph_task(t)
    return t


def sample_non_edges(data: GraphData, k: int, g: np.random.Generator) -> np.ndarray:
    """int64 (k, 2) distinct node pairs ``u < v`` that are not edges of ``data`` (rejection sampling, seeded)."""
    n = data.num_nodes
    if n * (n - 1) // 2 - data.num_edges < k:
        raise DataError(f"graph {data.name!r} has fewer than {k} non-edges to sample")
    known = set((data.edges[:, 0] * n + data.edges[:, 1]).tolist())
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < k:
        a = g.integers(0, n, size=2 * (k - len(out)) + 8)
        b = g.integers(0, n, size=len(a))
        for u, v in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()):
            key = u * n + v
            if u != v and key not in known and key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == k:
                    break
    keys = np.asarray(out, np.int64)
    return np.stack([keys // n, keys % n], axis=1)


def check_graph_task(t: GraphTask) -> None:
    """Check the split invariants; raise ``DataError`` naming the first violation.

    - D_f ⊂ D, D_r = D \\ D_f, D_f ∩ D_r = ∅ (ids of the target's kind);
    - no deleted edge is in the retain graph, in either direction;
    - deleted nodes have no edge in the retain graph, no label in training and a zero feature row; deleted feature
      rows are zero and their labels are not trained on;
    - link task: no test edge (or test non-edge) is a training edge.
    """
    train, forget, retain = t.train_ids, t.forget, t.retain_ids
    if not np.isin(forget, train).all():
        raise DataError("split invariant violated: some D_f ids are not in D")
    if np.intersect1d(forget, retain).size:
        raise DataError("split invariant violated: D_f and D_r share ids")
    if not np.array_equal(np.union1d(forget, retain), np.sort(train)):
        raise DataError("split invariant violated: D_r ∪ D_f ≠ D")
    r = t.view("retain")
    ei = r.edge_index.numpy()
    n = t.data.num_nodes
    present = set((ei[0] * n + ei[1]).tolist())
    for u, v in t.data.edges[t.removed_edge_ids].tolist():
        if u * n + v in present or v * n + u in present:
            raise DataError(f"split invariant violated: deleted edge ({u}, {v}) is in the retain graph")
    if t.target != "edge":
        if np.isin(r.train_nodes, t.forget).any():
            raise DataError("split invariant violated: a deleted node's label is still trained on")
        if bool(r.x[torch.from_numpy(t.forget)].abs().sum() != 0):
            raise DataError("split invariant violated: a deleted feature row is not zero in the retain graph")
        if t.target == "node" and np.isin(ei.reshape(-1), t.forget).any():
            raise DataError("split invariant violated: a deleted node still has an edge in the retain graph")
    if t.task == "link" and len(t.test_pos):
        if np.isin(t.data.edge_ids_of(t.test_pos), t.train_edge_ids).any():
            raise DataError("split invariant violated: a test edge is a training edge")
        if (t.data.edge_ids_of(t.test_neg) >= 0).any():
            raise DataError("split invariant violated: a test non-edge is an edge")
