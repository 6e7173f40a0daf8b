"""
How far to trust a model: running an evaluation under degradations and the shortcut check (`evaluate`), the metrics
(`metrics`), calibration (`calibration`), the Markdown report (`report`) and its plots (`plots`).
"""
