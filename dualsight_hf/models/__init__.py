"""
The DualSight model: configuration, modeling, image processing, pipeline and the artifact stream, which a saved folder
carries as its remote code (`configuration.py`, `modeling.py`, `image_processing.py`, `pipeline.py`, `artifacts.py`,
`images.py`: `modeling.py` and its relative imports, so these modules import nothing else of the package). The
image loader lives here because the pipeline reads files with it. Beside them, not copied into folders: loading
models safely (`loading`), the models this package ships (`default_model`, `clip_backbone`) and the conversion of the
original DualSight checkpoints (`convert`).
"""
