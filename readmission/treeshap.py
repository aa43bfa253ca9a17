"""Path-dependent TreeSHAP (the values of Lundberg et al. 2020, Algorithm 2) compiled with
numba, without holding the GIL, in time linear in a tree's depth.

`shap.TreeExplainer` computes the same values (the tests check it to 1e-9 on real and
synthetic models), but its C extension holds Python's global lock for the whole call:
while the API explains a micro-batch, the event loop could not read or answer any request.
Here the values are computed over flat arrays by numba with `nogil=True`, so explaining
runs beside the event loop on the second core. It also spares the API shap's import
(~40 MB over numba's, measured).

The method (after Yu et al. 2022, "Linear TreeShap"): for a leaf `v` whose path splits on
the features `F`, feature `i`'s share is `value(v) (p_i - q_i) * integral over t in [0, 1]
of prod_{j in F, j != i} (q_j (1 - t) + p_j t)`, where `q_j` is the product of the cover
ratios of the path's edges on `j` and `p_j` is 1 when the row follows all of them, else 0
(the integral is the Shapley weights' sum: `|S|! (|F| - |S| - 1)! / |F|!` is the integral
of `t^|S| (1 - t)^(|F| - |S| - 1)`). Each polynomial is held by its values at the
Gauss-Legendre points that integrate it exactly, so a product is a product of values and
a division by one feature's factor a division of values. One walk down the tree builds
`G`, the product over the path, edge by edge; one walk up sums `value * G` over the leaves
below each edge; at each edge, the leaves for which it is the deepest edge on its feature
give that feature `(p - q) * integral(sum / (q (1 - t) + p t))`. What does not depend on
the row (each edge's `q`, its own cover ratio, the depth of the previous edge on the same
feature) is computed once (`Paths`, three numbers a node); a row decides which children
it follows. Against the classic algorithm (a path extended and unwound at every node,
quadratic in the path's length), which this module ran before: the same values to 1e-13,
1.8 instead of 3.0 ms a row on the served LightGBM model's `<30` trees (436 trees of up to
20 levels, 26,600 nodes; docs/performance.md). Precomputing each node's factors at every
point as well was no faster (1.85 ms) and took 9 MB more for that model.

Trees are given as shap's dict form (children, default child for missing values, feature,
threshold with `x <= threshold` going left, node values and sample weights) and put end
to end (`Forest`); a row's contributions sum with the expected value to its raw score.
Compiled when first called (~2.5 s, 1 s more than the classic algorithm; at model load:
`explain.Explainer` calls it once), and cached on disk where it can be (`readmission.jit`:
0.7 s from the cache; not in an image whose site-packages is read-only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from readmission.halves import in_halves
from readmission.jit import compiled


@dataclass(frozen=True)
class Forest:
    """Every tree's nodes in flat arrays (children as absolute node indices, -1 at leaves),
    and what the method needs of each edge, indexed by the node it enters (`Paths`)."""

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    paths: Paths

    @property
    def max_depth(self) -> int:
        return int(self.paths.depth.max(initial=0))

    @classmethod
    def of(cls, trees: list[dict]) -> Forest:
        """From shap's dict form of each tree (`children_left`, `children_right`,
        `children_default`, `features`, `thresholds`, `values` (nodes, 1),
        `node_sample_weight`)."""
        sizes = np.array([len(t["children_left"]) for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

        def joined(name: str, shift: bool) -> np.ndarray:
            parts = []
            for offset, tree in zip(offsets, trees, strict=True):
                part = np.asarray(tree[name], dtype=np.int64)
                parts.append(np.where(part < 0, -1, part + offset) if shift else part)
            return np.concatenate(parts)

        left, right = joined("children_left", True), joined("children_right", True)
        feature = joined("features", False)
        cover = np.concatenate([np.asarray(t["node_sample_weight"], float) for t in trees])
        return cls(
            roots=offsets,
            left=left,
            right=right,
            default=joined("children_default", True),
            feature=feature,
            threshold=np.concatenate([np.asarray(t["thresholds"], float) for t in trees]),
            value=np.concatenate([np.asarray(t["values"], float).reshape(-1) for t in trees]),
            cover=cover,
            paths=Paths.of(offsets, left, right, feature, cover),
        )

    def expected_value(self) -> float:
        """The mean raw score over the training rows, each tree's leaves weighted by cover."""
        return float(_expected_value(self.roots, self.left, self.value, self.cover))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features) SHAP values of the summed trees' raw output for rows `x`; two
        rows or more are split between this thread and a helper thread (the compiled code
        does not hold the GIL, so the halves run on two cores)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        phi = np.zeros(x.shape, dtype=np.float64)
        in_halves(self._rows, x, phi, "treeshap")
        return phi

    def _rows(self, x: np.ndarray, phi: np.ndarray) -> None:
        paths = self.paths
        _shap_rows(
            x,
            self.roots,
            self.left,
            self.right,
            self.default,
            self.feature,
            self.threshold,
            self.value,
            paths.depth,
            paths.count,
            paths.points,
            paths.weights,
            paths.zero,
            paths.ratio,
            paths.prev,
            phi,
        )


@dataclass(frozen=True)
class Paths:
    """What does not depend on the row: per tree, its `depth` (its longest path, in edges),
    the Gauss-Legendre `points` and `weights` its polynomials are held at and integrated
    with (`_quadrature`, padded to the deepest tree's count) and how many it uses
    (`count`); per edge, indexed by the node it enters (a root's entries unused), `zero`
    (q: the product of the cover ratios of the path's edges on the edge's feature),
    `ratio` (the edge's own cover ratio) and `prev` (the depth of the nearest edge above on
    the same feature, -1 when none)."""

    depth: np.ndarray
    count: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    zero: np.ndarray
    ratio: np.ndarray
    prev: np.ndarray

    @classmethod
    def of(cls, roots, left, right, feature, cover) -> Paths:
        depth = np.array([_depth(left, right, root) for root in roots], dtype=np.int64)
        points, weights = _quadrature(int(depth.max(initial=0)))
        n = len(left)
        paths = cls(
            depth=depth,
            count=depth // 2 + 1,
            points=points,
            weights=weights,
            zero=np.ones(n),
            ratio=np.ones(n),
            prev=np.full(n, -1, dtype=np.int64),
        )
        _paths(roots, left, right, feature, cover, depth, paths.zero, paths.ratio, paths.prev)
        return paths


def _quadrature(max_depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on [0, 1], row `d` for a tree of depth `d`: its
    `d // 2 + 1` points integrate exactly every polynomial of degree `d - 1` (a path in it
    splits on at most `d` features); the rest of the row is padding."""
    size = max_depth // 2 + 1
    at, weight = np.full((max_depth + 1, size), 0.5), np.zeros((max_depth + 1, size))
    for depth in range(max_depth + 1):
        t, w = np.polynomial.legendre.leggauss(depth // 2 + 1)
        at[depth, : len(t)], weight[depth, : len(t)] = (t + 1.0) / 2.0, w / 2.0
    return at, weight


@compiled()
def _depth(left, right, root):  # pragma: no cover - compiled
    """The depth of the tree at `root` (a lone root: 0)."""
    deepest, top = 0, 1
    stack_node = np.empty(left.shape[0] + 1, dtype=np.int64)
    stack_depth = np.empty(left.shape[0] + 1, dtype=np.int64)
    stack_node[0], stack_depth[0] = root, 0
    while top > 0:
        top -= 1
        node, depth = stack_node[top], stack_depth[top]
        deepest = max(deepest, depth)
        if left[node] >= 0:
            stack_node[top], stack_depth[top] = left[node], depth + 1
            stack_node[top + 1], stack_depth[top + 1] = right[node], depth + 1
            top += 2
    return deepest


@compiled()
def _paths(
    roots, left, right, feature, cover, depths, zero, ratio, prev
):  # pragma: no cover - compiled (checked through the values it leads to)
    n_features = max(feature.max() + 1, 1)
    last = np.full(n_features, -1, dtype=np.int64)  # the depth of each feature's deepest edge
    last_node = np.full(n_features, -1, dtype=np.int64)  # ... and the node that edge enters
    size = depths.max() + 2
    saved = np.empty(size, dtype=np.int64)
    saved_node = np.empty(size, dtype=np.int64)
    slots = 3 * size
    stack_node = np.empty(slots, dtype=np.int64)
    stack_depth = np.empty(slots, dtype=np.int64)
    stack_split = np.empty(slots, dtype=np.int64)  # the feature of the edge entering the node
    stack_leave = np.zeros(slots, dtype=np.bool_)
    for t in range(roots.shape[0]):
        stack_node[0], stack_depth[0], stack_split[0], stack_leave[0] = roots[t], 0, -1, False
        top = 1
        while top > 0:
            top -= 1
            node, depth, split = stack_node[top], stack_depth[top], stack_split[top]
            if stack_leave[top]:  # the feature's deepest edge is again the one above it
                last[split], last_node[split] = saved[depth], saved_node[depth]
                continue
            if depth > 0:
                saved[depth], saved_node[depth] = last[split], last_node[split]
                last[split], last_node[split] = depth, node
                stack_node[top], stack_depth[top], stack_split[top] = node, depth, split
                stack_leave[top] = True
                top += 1
            if left[node] < 0:
                continue
            split = feature[node]
            above = last[split]
            above_zero = zero[last_node[split]] if above >= 0 else 1.0
            for child in (left[node], right[node]):
                own = cover[child] / cover[node]
                ratio[child], prev[child], zero[child] = own, above, own * above_zero
                stack_node[top], stack_depth[top], stack_split[top] = child, depth + 1, split
                stack_leave[top] = False
                top += 1


@compiled()
def _expected_value(roots, left, value, cover):
    total = 0.0
    for t in range(roots.shape[0]):
        root = roots[t]
        end = roots[t + 1] if t + 1 < roots.shape[0] else left.shape[0]
        for node in range(root, end):
            if left[node] < 0:
                total += value[node] * cover[node] / cover[root]
    return total


@compiled()
def _shap_rows(
    x,
    roots,
    left,
    right,
    default,
    feature,
    threshold,
    value,
    depths,
    count,
    at,
    weights,
    zero,
    ratio,
    prev,
    phi,
):  # pragma: no cover - compiled (its values are checked against shap's)
    # Per-point values are flat arrays, `stride` values a depth, addressed by unsigned
    # offsets (numba then skips the negative-index check at each access: ~6 %).
    stride = at.shape[1]
    size = depths.max() + 1  # depth positions 0 (a root) .. the deepest tree's depth
    g = np.empty(size * stride)  # the path's G, at the node entered at each depth
    inverse = np.empty(size * stride)  # 1 / the factor of the feature of the edge entered
    below = np.empty(size * stride)  # B: the sum of value * G over the leaves below it
    held = np.empty(size * stride)  # minus B of the nearest deeper edges on the same
    # feature (the leaves below those have a deeper edge on it)
    edge_one = np.empty(size)  # p of the edge entered at each depth
    slots = 2 * size + 2
    stack_node = np.empty(slots, dtype=np.int64)
    stack_depth = np.empty(slots, dtype=np.int64)
    stack_split = np.empty(slots, dtype=np.int64)
    stack_one = np.empty(slots)  # the edge's own p when entering; -1: to be finished
    for row in range(x.shape[0]):
        for t in range(roots.shape[0]):
            root = roots[t]
            if left[root] < 0:
                continue  # a lone leaf moves nothing
            k = np.uint64(count[t])
            u, w = at[depths[t]], weights[depths[t]]
            for j in range(k):
                g[j] = 1.0
                below[j] = 0.0
            top = _push_children(
                x,
                row,
                root,
                1,
                left,
                right,
                default,
                feature,
                threshold,
                stack_node,
                stack_depth,
                stack_split,
                stack_one,
                0,
            )
            while top > 0:
                top -= 1
                node, depth, split = stack_node[top], stack_depth[top], stack_split[top]
                here, up = np.uint64(depth * stride), np.uint64((depth - 1) * stride)
                if stack_one[top] >= 0.0:  # entering `node`
                    above, z = prev[node], zero[node]
                    if above >= 0 and edge_one[above] == 0.0:
                        # the row left the feature's path above: only the cover ratio counts
                        one, q = 0.0, ratio[node]
                        for j in range(k):
                            g[here + j] = g[up + j] * q
                            inverse[here + j] = 1.0 / (z * (1.0 - u[j]))
                    else:
                        one = stack_one[top]
                        nearest = np.uint64(max(above, 0) * stride)
                        for j in range(k):
                            factor = z * (1.0 - u[j]) + one * u[j]
                            g[here + j] = g[up + j] * factor
                            if above >= 0:  # the feature's factor above, replaced
                                g[here + j] *= inverse[nearest + j]
                            inverse[here + j] = 1.0 / factor
                    edge_one[depth] = one
                    for j in range(k):
                        held[here + j] = 0.0
                    if left[node] >= 0 and (one > 0.0 or z > 0.0):
                        for j in range(k):
                            below[here + j] = 0.0
                        stack_one[top] = -1.0  # finished once its children are
                        top = _push_children(
                            x,
                            row,
                            node,
                            depth + 1,
                            left,
                            right,
                            default,
                            feature,
                            threshold,
                            stack_node,
                            stack_depth,
                            stack_split,
                            stack_one,
                            top + 1,
                        )
                        continue
                    # a leaf, or a subtree whose G is 0 (an edge no training row took)
                    leaf = value[node] if left[node] < 0 else 0.0
                    for j in range(k):
                        below[here + j] = leaf * g[here + j]
                # finishing `node`: its edge's feature gets the share of the leaves whose
                # deepest edge on that feature this is; the sums go up to the parent
                one, z = edge_one[depth], zero[node]
                if one != z:
                    total = 0.0
                    for j in range(k):
                        total += (below[here + j] + held[here + j]) * w[j] * inverse[here + j]
                    phi[row, split] += (one - z) * total
                for j in range(k):
                    below[up + j] += below[here + j]
                above = prev[node]
                if above >= 0:
                    nearest = np.uint64(above * stride)
                    for j in range(k):
                        held[nearest + j] -= below[here + j]


@compiled(inline="always")
def _push_children(
    x,
    row,
    node,
    depth,
    left,
    right,
    default,
    feature,
    threshold,
    stack_node,
    stack_depth,
    stack_split,
    stack_one,
    top,
):  # pragma: no cover - compiled
    """Push `node`'s two children at `top`, the one the row goes to (p = 1) entered first,
    the other (p = 0) after; the new top."""
    split = feature[node]
    v = x[row, split]
    if np.isnan(v):
        hot = default[node]
    elif v <= threshold[node]:
        hot = left[node]
    else:
        hot = right[node]
    cold = right[node] if hot == left[node] else left[node]
    stack_node[top], stack_depth[top], stack_split[top], stack_one[top] = cold, depth, split, 0.0
    top += 1
    stack_node[top], stack_depth[top], stack_split[top], stack_one[top] = hot, depth, split, 1.0
    return top + 1
