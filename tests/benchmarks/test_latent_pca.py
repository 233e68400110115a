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
    out, figure = tmp_path / "pca.json", tmp_path / "pca.png"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latent_pca.py"), "--num", "20", "--out", str(out),
                    "--figure", str(figure)], check=True, capture_output=True, env=env, cwd=tmp_path)
    result = json.loads(out.read_text())
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert {"C", "O"} <= set(result["shared_elements"])
    assert 0 < sum(result["explained_variance_pc1_pc2"]) <= 1
    # the shipped VAE places an element where it places it in the other kind (docs/model.md)
    assert result["ratio"] < 1 and result["cross_kind_nearest_centroid_accuracy"] > 0.5
