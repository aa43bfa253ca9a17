"""Path-dependent TreeSHAP (Lundberg et al. 2020, Algorithm 2) compiled with numba, without
holding the GIL.

`shap.TreeExplainer` computes the same values (the tests check it to 1e-9 on real and
synthetic models), but its C extension holds Python's global lock for the whole call:
while the API explains a micro-batch (~1 ms a row for a few hundred trees), the event loop
cannot read or answer any request. Here the algorithm is the same, written over flat
arrays and compiled by numba with `nogil=True`, so explaining runs beside the event loop
on the second core. It also spares the API shap's import (~40 MB over numba's, measured).

Trees are given as shap's dict form (children, default child for missing values, feature,
threshold with `x <= threshold` going left, node values and sample weights) and put end
to end (`Forest`); a row's contributions sum with the expected value to its raw score.
Compiled when first called (~1.5 s, at model load: `explain.Explainer` calls it once), not
cached on disk: an image's site-packages may not be writable.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class Forest:
    """Every tree's nodes in flat arrays (children as absolute node indices, -1 at leaves)."""

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    max_depth: int

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

        left = joined("children_left", True)
        forest = cls(
            roots=offsets,
            left=left,
            right=joined("children_right", True),
            default=joined("children_default", True),
            feature=joined("features", False),
            threshold=np.concatenate([np.asarray(t["thresholds"], float) for t in trees]),
            value=np.concatenate([np.asarray(t["values"], float).reshape(-1) for t in trees]),
            cover=np.concatenate([np.asarray(t["node_sample_weight"], float) for t in trees]),
            max_depth=int(
                max(
                    _depth(np.asarray(t["children_left"]), np.asarray(t["children_right"]))
                    for t in trees
                )
            ),
        )
        return forest

    def expected_value(self) -> float:
        """The mean raw score over the training rows, each tree's leaves weighted by cover."""
        return float(_expected_value(self.roots, self.left, self.value, self.cover))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features) SHAP values of the summed trees' raw output for rows `x`; two
        rows or more are split between this thread and a helper thread (the compiled code
        does not hold the GIL, so the halves run on two cores)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        phi = np.zeros(x.shape, dtype=np.float64)
        if len(x) < 2:
            self._rows(x, phi)
            return phi
        half = (len(x) + 1) // 2
        other = _helper().submit(self._rows, x[half:], phi[half:])
        self._rows(x[:half], phi[:half])
        other.result()
        return phi

    def _rows(self, x: np.ndarray, phi: np.ndarray) -> None:
        _shap_rows(
            x,
            self.roots,
            self.left,
            self.right,
            self.default,
            self.feature,
            self.threshold,
            self.value,
            self.cover,
            self.max_depth + 2,
            phi,
        )


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """The one thread that explains the second half of a batch's rows."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="treeshap")


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """The depth of a tree (a lone root: 0)."""
    depth, level = 0, [0]
    while True:
        children = [c for n in level for c in (left[n], right[n]) if c >= 0]
        if not children:
            return depth
        depth, level = depth + 1, children


@njit(nogil=True, error_model="numpy")
def _expected_value(roots, left, value, cover):
    total = 0.0
    for t in range(roots.shape[0]):
        root = roots[t]
        end = roots[t + 1] if t + 1 < roots.shape[0] else left.shape[0]
        for node in range(root, end):
            if left[node] < 0:
                total += value[node] * cover[node] / cover[root]
    return total


@njit(nogil=True, error_model="numpy")
def _shap_rows(x, roots, left, right, default, feature, threshold, value, cover, max_depth, phi):
    # the path of unique features from the root, one copy per depth (Algorithm 2's m), each
    # copy just after its parent's; a stack instead of recursion (numba calls are costly)
    size = (max_depth + 2) * (max_depth + 3) // 2
    features = np.empty(size, dtype=np.int64)
    zeros = np.empty(size, dtype=np.float64)
    ones = np.empty(size, dtype=np.float64)
    weights = np.empty(size, dtype=np.float64)
    slots = 2 * (max_depth + 2)
    stack_node = np.empty(slots, dtype=np.int64)
    stack_depth = np.empty(slots, dtype=np.int64)
    stack_start = np.empty(slots, dtype=np.int64)
    stack_zero = np.empty(slots, dtype=np.float64)
    stack_one = np.empty(slots, dtype=np.float64)
    stack_feature = np.empty(slots, dtype=np.int64)
    for row in range(x.shape[0]):
        for t in range(roots.shape[0]):
            stack_node[0], stack_depth[0], stack_start[0] = roots[t], 0, 0
            stack_zero[0], stack_one[0], stack_feature[0] = 1.0, 1.0, -1
            top = 1
            while top > 0:
                top -= 1
                node, depth, start = stack_node[top], stack_depth[top], stack_start[top]
                here = start + depth + 1
                for i in range(depth):
                    features[here + i] = features[start + i]
                    zeros[here + i] = zeros[start + i]
                    ones[here + i] = ones[start + i]
                    weights[here + i] = weights[start + i]
                _extend(
                    features,
                    zeros,
                    ones,
                    weights,
                    here,
                    depth,
                    stack_zero[top],
                    stack_one[top],
                    stack_feature[top],
                )
                if left[node] < 0:
                    for i in range(1, depth + 1):
                        w = _unwound_sum(zeros, ones, weights, here, depth, i)
                        contribution = w * (ones[here + i] - zeros[here + i]) * value[node]
                        phi[row, features[here + i]] += contribution
                    continue
                split = feature[node]
                v = x[row, split]
                if np.isnan(v):
                    hot = default[node]
                elif v <= threshold[node]:
                    hot = left[node]
                else:
                    hot = right[node]
                cold = right[node] if hot == left[node] else left[node]
                incoming_zero, incoming_one = 1.0, 1.0
                k = 0
                while k <= depth:
                    if features[here + k] == split:
                        break
                    k += 1
                if k != depth + 1:
                    incoming_zero, incoming_one = zeros[here + k], ones[here + k]
                    _unwind(features, zeros, ones, weights, here, depth, k)
                    depth -= 1
                for child, one in ((cold, 0.0), (hot, incoming_one)):
                    stack_node[top], stack_depth[top], stack_start[top] = child, depth + 1, here
                    stack_zero[top] = cover[child] / cover[node] * incoming_zero
                    stack_one[top], stack_feature[top] = one, split
                    top += 1


@njit(nogil=True, error_model="numpy", inline="always")
def _extend(features, zeros, ones, weights, at, depth, zero_fraction, one_fraction, feature_index):
    features[at + depth] = feature_index
    zeros[at + depth] = zero_fraction
    ones[at + depth] = one_fraction
    weights[at + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        weights[at + i + 1] += one_fraction * weights[at + i] * (i + 1) / (depth + 1)
        weights[at + i] = zero_fraction * weights[at + i] * (depth - i) / (depth + 1)


@njit(nogil=True, error_model="numpy", inline="always")
def _unwind(features, zeros, ones, weights, at, depth, k):
    one_fraction, zero_fraction = ones[at + k], zeros[at + k]
    next_one = weights[at + depth]
    for i in range(depth - 1, -1, -1):
        if one_fraction != 0:
            kept = weights[at + i]
            weights[at + i] = next_one * (depth + 1) / ((i + 1) * one_fraction)
            next_one = kept - weights[at + i] * zero_fraction * (depth - i) / (depth + 1)
        else:
            weights[at + i] = weights[at + i] * (depth + 1) / (zero_fraction * (depth - i))
    for i in range(k, depth):
        features[at + i] = features[at + i + 1]
        zeros[at + i] = zeros[at + i + 1]
        ones[at + i] = ones[at + i + 1]


@njit(nogil=True, error_model="numpy", inline="always")
def _unwound_sum(zeros, ones, weights, at, depth, k):
    one_fraction, zero_fraction = ones[at + k], zeros[at + k]
    next_one = weights[at + depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one_fraction != 0:
            part = next_one * (depth + 1) / ((i + 1) * one_fraction)
            total += part
            next_one = weights[at + i] - part * zero_fraction * (depth - i) / (depth + 1)
        else:
            total += weights[at + i] / zero_fraction / ((depth - i) / (depth + 1))
    return total
