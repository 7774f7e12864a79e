"""ebgen.metrics: pure metric functions (numpy; onnxruntime for the bundled classifier), which
the eval stage (`ebgen.eval`), the trainer's plots and the benchmarks call.

* `distribution` — MMD² over its data-vs-data floor, precision/recall (k-NN manifolds).
* `points` — low-dimensional models: mode shares, VEEGAN modes, exact samples of exp(−E) on a
  grid, the grid KL, and the points report `evaluate_points`.
* `images` — the bundled MNIST classifier's metrics (classes, Fréchet distance, features).
* `anomaly` — AUROC/AUPRC of the energy against corrupted images, beside a PCA baseline.
* `point_anomaly` — AUROC of the energy against corrupted feature vectors (any D), beside a
  Gaussian (Mahalanobis) baseline.
"""
