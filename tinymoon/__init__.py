"""tinymoon — a small tensor and autodiff engine (placeholder during bootstrap)."""
