"""Publishing DualSight models: the Hub repository folder, its model card, and the upload."""

import json
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .data.sources import as_list
from .machine import machine_line
from .models.default_model import remote_code_paths

#: Files of a model folder that belong in its Hub repository (weights, configs, remote code, plots, results).
REPO_FILE_PATTERNS = ("model.safetensors", "config.json", "preprocessor_config.json", "*.py", "*.png",
                      "all_results.json", "split.json", "evaluation/*")
PLOTS = {
    "training_curves.png": "Training curves",
    "confusion_matrix.png": "Confusion matrix (test split)",
    "roc_curve.png": "ROC curve (test split)",
    "reliability_diagram.png": "Reliability diagram (test split)",
}
METRICS = ("accuracy", "precision", "recall", "f1", "auroc", "ece")


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}" if isinstance(value, float) else str(value)


def _metrics_table(rows: dict[str, dict]) -> str:
    header = "| | " + " | ".join(METRICS) + " | images |\n|---|" + "---|" * (len(METRICS) + 1) + "\n"
    return header + "".join(
        f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in METRICS) + f" | {m.get('count', '')} |\n"
        for name, m in rows.items()
    )


def _labels_line(id2label: dict) -> str:
    return ", ".join(f"`{id2label[i]}`" for i in sorted(id2label))


def results_markdown(model_dir) -> str:
    """The test metrics a training run wrote to `all_results.json` (overall, per source, object head), as Markdown."""
    results = json.loads((Path(model_dir) / "all_results.json").read_text())
    parts = [_metrics_table({"all": results["test"], **{f"source: {k}": v for k, v in
                                                         results.get("test_by_source", {}).items()}})]
    objects = results.get("test_objects", {})
    if objects.get("count"):
        parts.append("Object head on the test images with object labels: " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in objects.items() if k != "per_class") + "\n")
    if objects.get("per_class"):
        parts.append("| object | test images with it | average precision | F1 at 0.5 |\n|---|---|---|---|\n" + "\n".join(
            f"| {name} | {metrics['count']} | {_fmt(metrics['average_precision'])} | {_fmt(metrics['f1'])} |"
            for name, metrics in sorted(objects["per_class"].items(), key=lambda item: -item[1]["count"])) + "\n")
    return "\n".join(parts)


def precision_markdown(model_dir) -> str:
    """One sentence from `evaluation/precision.json`: what bfloat16 did to the answers, and the precision chosen."""
    precision = json.loads((Path(model_dir) / "evaluation" / "precision.json").read_text())
    said = []
    if "images_per_second" in precision:
        speeds = precision["images_per_second"]
        said.append(f"bfloat16 scored {speeds['bfloat16']:.1f} images/s against float32's {speeds['float32']:.1f} on "
                    f"{precision['speed_machine']}" + ("" if "agreement" in precision else
                                                       ", so its answers were not measured"))
    if "agreement" in precision:
        said.append(f"on the validation split bfloat16 kept {precision['agreement']:.1%} of float32's decisions "
                    f"(AUROC difference {precision['auroc_difference']:.4f}, largest probability change "
                    f"{precision['max_probability_difference']:.3f})")
    return (f"Precision: {'; '.join(said)}; `dualsight predict --dtype auto` uses {precision['inference_dtype']} for "
            "this model.\n")


def remote_code_files() -> list[str]:
    """
    The code files that `save_pretrained` writes beside a DualSight model (and so a Hub repository of one holds):
    `modeling.py` and every module it imports by relative import, as transformers collects them (see
    `default_model.remote_code_paths`). Folders inside the package (the default model's parts) hold none: the package
    is their code, and [`stage_repo_folder`] writes them.

    Example:

    ```python
    >>> from dualsight_hf.hub import remote_code_files
    >>> "modeling.py" in remote_code_files() and "configuration.py" in remote_code_files()
    True
    ```
    """
    return [path.name for path in remote_code_paths()]


def build_model_card(model_dir, repo_id: str, license: str = "apache-2.0", datasets: list[str] | None = None,
                     base_model: str | None = None, dataset_name: str = "test split") -> ModelCard:
    """
    The model card (`README.md`) of a trained DualSight model folder, from what the folder holds: its config (both
    label lists), `all_results.json` (the test metrics and the recipe that the training run measured and wrote) and
    its plots. Nothing in it is typed in by hand.

    Args:
        model_dir (`str` or `Path`): a folder written by `train.py` (or any DualSight model folder).
        repo_id (`str`): the Hub repository, used in the usage snippets.
        license (`str`, *optional*, defaults to `"apache-2.0"`)
        datasets (`list[str]`, *optional*): Hub ids of the training datasets, for the metadata.
        base_model (`str`, *optional*): Hub id of the pretrained backbone, for the metadata.
        dataset_name (`str`, *optional*): how the evaluation data is named in the `model-index`.

    Returns:
        `huggingface_hub.ModelCard`
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    id2label = {int(k): v for k, v in config["id2label"].items()}
    object_id2label = {int(k): v for k, v in (config.get("object_id2label") or {}).items()}
    results_file = model_dir / "all_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    test = results.get("test", {})
    eval_results = [
        EvalResult(task_type="image-classification", task_name="AI-generated image detection",
                   dataset_type="dualsight-manifest", dataset_name=dataset_name, dataset_split="test",
                   metric_type=metric, metric_name=metric, metric_value=float(test[metric]))
        for metric in ("accuracy", "f1", "auroc") if metric in test
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        datasets=datasets,
        base_model=base_model,
        tags=["dualsight", "ai-generated-image-detection", "image-classification", "custom_code"],
        metrics=["accuracy", "f1", "roc_auc"],
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    backbone = config["backbone_config"]["model_type"]
    stream = config.get("artifact_stream")
    artifact_line = (
        f" Beside the backbone, an **artifact stream** looks at {stream['crops_per_side']} x "
        f"{stream['crops_per_side']} crops of {stream['crop_size']} px at the image's native resolution: fixed "
        f"residuals ({', '.join(r.upper() for r in stream['residuals'])}) and a small CNN, whose feature goes to the "
        f"authenticity head {'with' if stream['semantic_features'] else 'instead of'} the backbone's (crop logits "
        f"combined by {stream['crop_aggregation']})." if stream else "")
    code_files = remote_code_files()
    sections = [
        f"# {repo_id.split('/')[-1]}\n",
        f"A DualSight model (Python package `dualsight-hf`): one `{backbone}` backbone with two "
        "heads. The **authenticity** head tells real photographs from AI-generated images; the **objects** head "
        f"names what is in the image.{artifact_line}\n",
        "## Labels\n",
        f"- Authenticity ({len(id2label)} classes, softmax): {_labels_line(id2label)}",
        f"- Objects ({len(object_id2label)} classes, {config.get('object_problem_type')}): "
        f"{_labels_line(object_id2label) if object_id2label else 'head off'}\n",
        "## Usage\n",
        "With the `dualsight-hf` package installed (no remote code runs):\n",
        f"```python\nfrom dualsight_hf import load_pipeline\n\nclassifier = load_pipeline(\"{repo_id}\")\n"
        "classifier(\"photo.jpg\")                 # [{'label': ..., 'score': ...}, ...]\n"
        "classifier(\"photo.jpg\", head=\"both\")    # {'authenticity': [...], 'objects': [...]}\n```\n",
        "Without it, through the code stored in this repository. `trust_remote_code=True` runs this repository's "
        f"{', '.join(f'`{name}`' for name in code_files) or 'code'} in your Python: read them first, and pin the "
        "commit you read with `revision=`:\n",
        f"```python\nfrom transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline\n\n"
        f"classifier = pipeline(\"image-classification\", model=\"{repo_id}\", trust_remote_code=True, "
        "revision=\"<commit sha>\")\n"
        f"model = AutoModelForImageClassification.from_pretrained(\"{repo_id}\", trust_remote_code=True)\n"
        f"processor = AutoImageProcessor.from_pretrained(\"{repo_id}\", trust_remote_code=True)\n"
        "outputs = model(**processor(images, return_tensors=\"pt\"))  # outputs.logits, outputs.object_logits\n```\n",
        "Fine-tune on your own images (one sub-folder per class, or a CSV manifest) with `Trainer`:\n",
        f"```bash\npython train.py --model_name_or_path {repo_id} --data my_images/ --output_dir out "
        "--num_train_epochs 3 --eval_strategy epoch --save_strategy epoch\n```\n",
    ]
    if test:
        sections += ["## Evaluation\n",
                     "Measured on its held-out test split (never used for model selection):\n",
                     results_markdown(model_dir)]
    evaluation_report = model_dir / "evaluation" / "report.md"
    if evaluation_report.exists():
        sections += ["## Robustness and calibration\n", evaluation_report.read_text()]
    if (model_dir / "evaluation" / "precision.json").exists():
        sections.append(precision_markdown(model_dir))
    generalisation = model_dir / "evaluation" / "leave_one_family_out.md"
    if generalisation.exists():
        sections += ["## Generalisation to generators it never saw\n",
                     "Leave-one-family-out runs of this model's recipe: each run is fitted without one generator family "
                     "and tested on it alone.\n",
                     generalisation.read_text()]
    recipe = results.get("recipe")
    if recipe and "summary" in recipe:  # a model made without train.py says how it was made
        sections += ["## How it was made\n"] + [f"- {line}" for line in recipe["summary"]] + [""]
    elif recipe:
        data, training, model = recipe["data"], recipe["training"], recipe["model"]
        sections += [
            "## Training\n",
            "- Data: " + ", ".join(f"`{source}`" for source in as_list(data["data"]))
            + (", objects from " + ", ".join(f"`{file}`" for file in as_list(data["objects_file"]))
               if data.get("objects_file") else "")
            + (f"; every (`{data['balance_by']}`, label) stratum drawn equally often" if data.get("balance_by")
               else ""),
            f"- Split: validation {data['validation_size']}, test {data['test_size']} of every "
            f"{'(' + data['stratify_by'] + ', label)' if data.get('stratify_by') else 'label'} stratum, seed "
            f"{data['split_seed']}; sizes {results.get('split_sizes')}",
            f"- Start: `{model.get('backbone') or model.get('model_name_or_path')}`; learning rate heads "
            f"{training['learning_rate']}, backbone {model.get('backbone_learning_rate') or training['learning_rate']}"
            f"; {training['num_train_epochs']} epochs, batch {training['per_device_train_batch_size']} x "
            f"{training['world_size']} process(es), {training['lr_scheduler_type']} schedule, bf16 "
            f"{training['bf16']}, seed {training['seed']}",
            f"- Augmentation: {'on' if data.get('augment') else 'off'} (random resized crop, flip, rotation, colour "
            f"jitter, JPEG re-compression p={data.get('jpeg_p')}, blur p={data.get('blur_p')}, down-up scaling "
            f"p={data.get('rescale_p')})",
            f"- Checkpoint kept: best validation `{training['metric_for_best_model']}`"
            + (f" ({_fmt(results['best_checkpoint']['validation_value'])})" if results.get("best_checkpoint") else ""),
            f"- Training time: {results['train']['train_runtime'] / 60:.1f} minutes"
            + (f" on {machine_line(results['machine'])}" if results.get("machine") else "") + "\n",
        ]
    sections += [
        "## Limitations\n",
        "- Generators the model never saw: detectors trained on a few generator families are known to fall towards "
        "chance on new ones. The per-source test table is in-distribution"
        + (" only." if not generalisation.exists() else "; the leave-one-family-out table shows the drop."),
        "- Compression and resizing: re-encoding, downscaling and screenshots remove the traces a detector reads. "
        "Augmentations help but do not remove the effect.",
        "- Content shortcuts: when real and generated images differ in content or size within the training data, a "
        "model can learn those instead of generation traces.",
        "- The object head learned from pseudo-labels made by another model, with its errors and closed vocabulary.",
        "- A score is evidence, not proof: do not take decisions about people on it alone.\n",
    ]
    plots = [name for name in PLOTS if (model_dir / name).exists()]
    if plots:
        sections += ["## Plots\n"] + [f"![{PLOTS[name]}]({name})\n" for name in plots]
    return ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n\n{{ content }}\n",
                                   content="\n".join(sections))


def stage_repo_folder(model_dir, out_dir, repo_id: str, **card_kwargs) -> list[tuple[str, int]]:
    """
    Write the exact folder that would be uploaded: the model's files (weights, configs, remote code, plots,
    results) and a generated model card.

    Args:
        model_dir (`str` or `Path`): a trained model folder (e.g. a `train.py` output folder).
        out_dir (`str` or `Path`): where to write the repository folder (emptied first).
        repo_id (`str`): the target repository.
        **card_kwargs: passed on to [`build_model_card`].

    Returns:
        `list[tuple[str, int]]`: relative path and size in bytes of every staged file.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve() or out_dir.resolve() in model_dir.resolve().parents:
        raise ValueError(f"{out_dir}: the staging folder is emptied first, so it must not be (or contain) the model "
                         f"folder {model_dir}")
    if not (model_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (train or convert a model first)")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for pattern in REPO_FILE_PATTERNS:
        for source in model_dir.glob(pattern):
            if source.is_file():
                target = out_dir / source.relative_to(model_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    # Weights, config and remote code written by this package's save_pretrained, so that the code files match the
    # config (a run folder holds the code of the version that trained it).
    from .models.loading import load_model

    load_model(str(model_dir)).save_pretrained(out_dir)
    build_model_card(model_dir, repo_id, **card_kwargs).save(out_dir / "README.md")
    return sorted((str(p.relative_to(out_dir)), p.stat().st_size) for p in out_dir.rglob("*") if p.is_file())


def push_model(model_dir, repo_id: str, staging_dir, private: bool = False, branch: str | None = None,
               commit_message: str = "Upload DualSight model", token: str | None = None, api: HfApi | None = None,
               **card_kwargs):
    """
    Stage the repository folder and upload it in one commit.

    The token comes from `token`, else `HF_TOKEN` or the stored `huggingface-cli login`, as huggingface_hub reads
    them. The repository is created if needed (`exist_ok`), the branch too.

    Returns:
        `huggingface_hub.CommitInfo` (its `commit_url` says where the commit is).
    """
    api = api or HfApi(token=token)
    stage_repo_folder(model_dir, staging_dir, repo_id, **card_kwargs)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if branch:
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    return api.upload_folder(folder_path=str(staging_dir), repo_id=repo_id, repo_type="model", revision=branch,
                             commit_message=commit_message)
