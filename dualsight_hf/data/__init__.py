"""
Data for training and evaluation: where examples come from (`sources`), how they are split and balanced (`split`),
the training augmentations and transform (`augmentation`), the degradations of the robustness checks
(`degradations`), object pseudo-labels from a segmentation model (`pseudo_label`), and the tiny autoencoder whose round
trips make aligned training pairs (`autoencoder`).
"""
