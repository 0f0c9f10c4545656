"""tinymoon.randomized — unbiased randomized gradients that trade variance for memory (docs/design.md, residual policy "sketched").

The policies (policy.py): a Linear or Conv2d keeps a random sketch of its input instead of the input and
estimates its weight cotangent from it — `RowSketch`, `PixelSketch` (trace), `SampledInput` (sparse, low-rank).

- Trace estimation of conv2d / linear weight gradients from a stored sketch Zᵀx (trace.py, probes.py):
  `TraceEstimator`, `sketched_conv2d`, `sketched_linear`, `trace_variance`, `linear_trace_variance`.
- Unbiased sparse and low-rank sketches of VJPs, on the cotangent or on the stored activation (sparse.py):
  `SparseVJP`, `LowRankVJP`, `sparse_cotangent`, `lowrank_cotangent`, `sampled_conv2d`, `sampled_linear`,
  `waterfill`, `sketch_variance`, `lowrank_variance`.
- `convert(model, ...)`: set estimators on the Conv2d / Linear layers of an existing model.

Every random draw comes from an explicit seed or numpy Generator: the same seed gives the same gradients.
"""
from .convert import convert, set_estimator
from .probes import DISTRIBUTIONS, probe_matrix
from .policy import SketchPolicy
from .sparse import (LowRankCotangent, LowRankVJP, SampledInput, SparseCotangent, SparseVJP,
                     lowrank_cotangent, lowrank_factors, lowrank_variance, probabilities, sampled_conv2d,
                     sampled_linear, sketch_variance, sparse_cotangent, sparsify, waterfill)
from .trace import (PixelSketch, RowSketch, TraceEstimator, linear_trace_variance, sketched_conv2d,
                    sketched_linear, trace_variance)

__all__ = ["TraceEstimator", "SparseVJP", "LowRankVJP", "convert", "set_estimator", "sketched_conv2d",
           "sketched_linear", "sparse_cotangent", "lowrank_cotangent", "sampled_conv2d", "sampled_linear",
           "trace_variance", "linear_trace_variance", "waterfill", "probabilities", "sketch_variance",
           "lowrank_variance", "lowrank_factors", "sparsify", "probe_matrix", "DISTRIBUTIONS", "RowSketch",
           "PixelSketch", "SampledInput", "SketchPolicy", "SparseCotangent", "LowRankCotangent"]
