"""Hugging Face Spaces entry point: `python app.py` starts the DualSight page (same as `dualsight demo`)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from dualsight_hf.demo import launch  # noqa: E402

if __name__ == "__main__":
    launch()
