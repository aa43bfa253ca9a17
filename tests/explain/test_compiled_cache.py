"""The compiled loops are compiled once, not in every process: the next process loads them
from numba's on-disk cache (seconds saved in each Airflow task and at each API start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

EXPLAIN = """
import json, numpy as np
from readmission import treeshap
tree = {  # x0 <= 0 goes left; missing goes left
    "children_left": np.array([1, -1, -1]), "children_right": np.array([2, -1, -1]),
    "children_default": np.array([1, -1, -1]), "features": np.array([0, -2, -2]),
    "thresholds": np.array([0.0, 0.0, 0.0]), "values": np.array([[0.0], [-1.0], [2.0]]),
    "node_sample_weight": np.array([10.0, 6.0, 4.0]),
}
phi = treeshap.Forest.of([tree, tree]).contributions(np.array([[-1.0, 3.0], [1.0, 0.0]]))
print(json.dumps({
    "hits": sum(treeshap._shap_rows.stats.cache_hits.values()),
    "misses": sum(treeshap._shap_rows.stats.cache_misses.values()),
    "phi": phi.round(12).tolist(),
}))
"""


def _run(cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-c", EXPLAIN], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_explainer_from_the_cache(tmp_path):
    first = _run(str(tmp_path))
    assert first["misses"] >= 1, first
    assert first["hits"] == 0, first
    assert any(tmp_path.rglob("*.nbi")), sorted(tmp_path.rglob("*"))
    second = _run(str(tmp_path))
    assert second["hits"] >= 1, second
    assert second["misses"] == 0, second
    assert second["phi"] == first["phi"]
