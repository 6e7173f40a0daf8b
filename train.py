#!/usr/bin/env python
"""Fine-tune a DualSight model with Trainer (same arguments as `dualsight train`; `--help` lists them).

Examples:
    python train.py --backbone ../shared/weights/mobilenet-v2-1.0-224-imagenet \
        --data ../shared/data/real-vs-ai/manifest.csv --stratify_by source --output_dir out --num_train_epochs 3
    python train.py recipes/mobile_model.yaml
    accelerate launch --multi_gpu --num_processes 2 train.py recipes/mobile_model.yaml
"""

import sys

from dualsight_hf.training.trainer import main

if __name__ == "__main__":
    sys.exit(main())
