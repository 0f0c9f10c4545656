"""tinymoon.kernels — low-level kernels on raw arrays (filled in by the kernels work)."""
