"""
Scoring images: the `Predictor` (the one inference loop of `predict`, `evaluate`, `calibrate`, `check-precision`,
the demo and the benchmarks) in `predictor`, what it writes (`results`), the per-batch normalisation it defers to the
device (`normalization`), reduced precision and int8 (`precision`, `quantization`), provenance evidence read beside
the pixels (`provenance`), ONNX export (`export`) and Grad-CAM explanations (`gradcam`).
"""
