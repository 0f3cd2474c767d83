"""k-means for cluster routing: the old hand-written numpy k-means against faiss's, on random vectors.

    python bench/kmeans.py [--sizes 2000 20000] [--ks 8 32] [--dims 384] [--iterations 25]
                           [--repeats 3] [--seed 0] [--data uniform|blobs]

Both run on the same L2-normalised float32 vectors under the same seed and iteration budget:

- ``numpy (old)``: the hand-written spherical k-means that ``orchestrator.clusters.kmeans``
  was before issue 23, copied here verbatim as the baseline (k-means++ seeding, stops early
  once the centroids stop moving);
- ``faiss``: ``orchestrator.clusters.kmeans`` as shipped (``faiss.Kmeans``, ``spherical=True``,
  every vector, all ``--iterations`` rounds).

After one untimed warm-up call each, each is timed ``--repeats`` times, the fastest kept
(the machine may be shared); "same on re-run" says whether every repeat gave identical
centroids. Quality: the clustering objective, the mean cosine of each vector to its nearest
centroid (higher is better).
``--data uniform`` draws the vectors uniformly on the sphere (no structure to find: the
objective only shows that both descend as far); ``blobs`` draws them around k random centres.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.clusters import kmeans  # noqa: E402


def numpy_kmeans_old(vectors: np.ndarray, count: int, seed: int, iterations: int = 25) -> np.ndarray:
    """BASELINE, not used by symoe: ``orchestrator.clusters.kmeans`` before issue 23, verbatim.

    Centroids (count, dims), unit length, of normalised ``vectors`` (spherical k-means)."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    count = max(1, min(count, n))
    chosen = [int(rng.integers(n))]
    for _ in range(1, count):  # k-means++: far points are likelier next centres
        distance = np.min(1.0 - vectors @ vectors[chosen].T, axis=1).clip(min=0.0)
        total = float(distance.sum())
        chosen.append(int(rng.choice(n, p=distance / total)) if total > 0 else int(rng.integers(n)))
    centroids = vectors[chosen].copy()
    for _ in range(iterations):
        labels = np.argmax(vectors @ centroids.T, axis=1)
        moved = centroids.copy()
        for c in range(count):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                moved[c] = mean / (np.linalg.norm(mean) or 1.0)
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


METHODS: dict[str, Callable[[np.ndarray, int, int, int], np.ndarray]] = {
    "numpy (old)": numpy_kmeans_old,
    "faiss": kmeans,
}


def vectors_for(size: int, dims: int, k: int, data: str, seed: int) -> np.ndarray:
    """``size`` unit float32 vectors: uniform on the sphere, or around ``k`` random centres."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(size, dims))
    if data == "blobs":
        centres = rng.normal(size=(k, dims))
        points = centres[rng.integers(k, size=size)] + 0.8 * points  # cosine to own centre ~0.78
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def objective(vectors: np.ndarray, centroids: np.ndarray) -> float:
    """Mean cosine of each vector to its nearest centroid."""
    return float(np.max(vectors @ centroids.T, axis=1).mean())


def measure(method: Callable[[np.ndarray, int, int, int], np.ndarray], vectors: np.ndarray, k: int,
            seed: int, iterations: int, repeats: int) -> tuple[float, float, bool, int]:
    """Fastest seconds, objective, whether every repeat gave the same centroids, clusters."""
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(method(vectors, k, seed, iterations))
        times.append(time.perf_counter() - start)
    same = all(np.array_equal(results[0], r) for r in results[1:])
    return min(times), objective(vectors, results[0]), same, len(results[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dims", type=int, default=384, help="384: the shipped MiniLM's embeddings")
    parser.add_argument("--iterations", type=int, default=25, help="the clusters: config's default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("uniform", "blobs"), default="uniform")
    args = parser.parse_args()

    console = Console(width=120)
    console.print(f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__} "
                  f"({faiss.omp_get_max_threads()} OpenMP threads); {os.cpu_count()} CPU cores, "
                  f"{platform.machine()}; {args.data} vectors, {args.dims} dims, {args.iterations} iterations, "
                  f"seed {args.seed}, fastest of {args.repeats}")
    warm = vectors_for(64, args.dims, 4, args.data, args.seed)
    for fn in METHODS.values():  # untimed: imports, BLAS and OpenMP threads start
        fn(warm, 4, args.seed, args.iterations)
    table = Table(title="spherical k-means: old numpy against faiss.Kmeans")
    for col in ("vectors", "k", "method", "seconds", "old / faiss time", "mean cosine", "same on re-run"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for size in args.sizes:
        for k in args.ks:
            vectors = vectors_for(size, args.dims, k, args.data, args.seed)
            rows = {name: measure(fn, vectors, k, args.seed, args.iterations, args.repeats)
                    for name, fn in METHODS.items()}
            ratio = rows["numpy (old)"][0] / rows["faiss"][0]
            for name, (seconds, score, same, clusters) in rows.items():
                assert clusters == k, (name, clusters, k)
                table.add_row(str(size), str(k), name, f"{seconds:.3f}",
                              f"{ratio:.2f}x" if name == "faiss" else "", f"{score:.4f}", "yes" if same else "NO")
            table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
