"""
Training: the `Trainer` subclass and the `train.py` entry point (`trainer`), few-shot adaptation to a new generator
(`adaptation`), and the closed-form logistic heads that both fit on frozen features (`linear_heads`).
"""
