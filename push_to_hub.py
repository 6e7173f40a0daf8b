#!/usr/bin/env python
"""Publish a trained DualSight model folder to the Hugging Face Hub (same as `dualsight push`).

Examples:
    python push_to_hub.py outputs/mobile-model my-org/dualsight-mobilenet --dry-run --out /tmp/repo
    python push_to_hub.py outputs/mobile-model my-org/dualsight-mobilenet --private --branch v1
"""

import argparse
import sys

from dualsight_hf.cli import add_push_arguments, run_push

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_push_arguments(parser)
    sys.exit(run_push(parser.parse_args()))
