#!/usr/bin/env python
"""Write the shipped default model's measured results into README.md (run by `make default-model`)."""

from pathlib import Path

from dualsight_hf import DEFAULT_MODEL_DIR
from dualsight_hf.hub import results_markdown, write_marked_block

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    intro = ("Test split of the recipe (15% of every source and class, never used for model selection), measured by "
             "the training run:\n\n")
    write_marked_block(README, "default-model-results", intro + results_markdown(DEFAULT_MODEL_DIR))
