"""benchmarks/latent_pca.py on the fixture splits: the figure, and the shared-space numbers from real latents."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def test_latent_pca_measures_the_shared_space_of_the_shipped_vae(tmp_path):
    env = {"ADIT_MP20_DIR": str(FIXTURES / "mp20"), "ADIT_QM9_DIR": str(FIXTURES / "qm9"),
           "ADIT_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out, figure, systems = tmp_path / "pca.json", tmp_path / "pca.png", tmp_path / "systems.png"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latent_pca.py"), "--num", "20", "--out", str(out),
                    "--figure", str(figure), "--systems-figure", str(systems)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    result = json.loads(out.read_text())
    assert figure.read_bytes()[:4] == systems.read_bytes()[:4] == b"\x89PNG"
    # one point per system: the axes follow what the systems are made of (docs/model.md: -0.95 over 500
    # molecules); a single cut separates kinds no better than 72% over 500 + 500 (here 20 + 20)
    systems = result["systems"]
    assert max(abs(c) for c in systems["molecules"]["corr_mean_atomic_number"]) > 0.7
    assert all(0.5 <= a <= 1 for a in systems["kind_accuracy_best_threshold"])
    assert {"C", "O"} <= set(result["shared_elements"])
    assert 0 < sum(result["explained_variance_pc1_pc2"]) <= 1
    # the shipped VAE places an element where it places it in the other kind (docs/model.md)
    assert result["ratio"] < 1 and result["cross_kind_nearest_centroid_accuracy"] > 0.5


def test_best_threshold_accuracy_and_system_means():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from latent_pca import best_threshold_accuracy, system_means

    labels = np.array([True, True, False, False])
    assert best_threshold_accuracy(np.array([3.0, 4.0, 1.0, 2.0]), labels) == 1.0
    assert best_threshold_accuracy(np.array([1.0, 2.0, 3.0, 4.0]), labels) == 1.0  # the cut works either way round
    assert best_threshold_accuracy(np.array([1.0, 3.0, 2.0, 4.0]), labels) == 0.75
    z = np.array([[0.0, 2.0], [2.0, 4.0], [5.0, 5.0]])
    means, mean_z, common = system_means(z, np.array([1, 1, 8]), np.array([0, 2, 3]))
    np.testing.assert_allclose(means, [[1.0, 3.0], [5.0, 5.0]])
    np.testing.assert_allclose(mean_z, [1.0, 8.0])
    assert common.tolist() == [1, 8]
