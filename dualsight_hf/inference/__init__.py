"""
Scoring images: the `Predictor` (the one way from an image to an answer, for `predict`, `evaluate`, `calibrate`,
`check-precision`, `adapt`, the service, the demo and the benchmarks) in `predictor`, a `predict` run (`runs`), what
it writes (`results`), the per-batch normalisation it defers to the device (`normalization`), reduced precision and
int8 (`precision`, `quantization`), ONNX Runtime as the engine instead of torch (`onnxruntime_backend`), provenance
evidence read beside the pixels (`provenance`), ONNX export (`export`) and Grad-CAM explanations (`gradcam`).
"""
