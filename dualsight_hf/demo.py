"""The web demo (`python app.py`, `dualsight demo`): a Gradio page over the functions in this module.

Gradio is an optional extra (`pip install dualsight-hf[demo]`); only `build_demo` imports it.
"""

import csv
import os
import tempfile
import time
from pathlib import Path

from .inference.predictor import Predictor
from .inference.provenance import read_provenance
from .models.images import ImageLoadError, load_image
from .models.loading import ModelLoadError
from .models.pipeline import UNCERTAIN

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_CHOICE = "default"
DEFAULT_BAND = 0.1


class ModelCache:
    """Loads each model choice once, as a [`~inference.predictor.Predictor`] (the loop `dualsight predict` runs, so
    the page gives the same answers): `"default"` (the default model), `"mobile"` (the bundled MobileNetV2 model), a
    local folder, or a Hub id."""

    def __init__(self):
        self.loaded = {}

    def get(self, choice: str) -> Predictor:
        from .models.default_model import DefaultModelNotBuiltError, resolve_model

        choice = (choice or DEFAULT_CHOICE).strip()
        if choice not in self.loaded:
            try:
                name = resolve_model(choice)
            except DefaultModelNotBuiltError as error:
                raise ModelChoiceError(str(error)) from None
            try:
                self.loaded[choice] = Predictor(name, batch_size=1, top_k=5, num_workers=0)
            except (OSError, ValueError, ModelLoadError) as error:
                reason = str(error).splitlines()[0]
                if not Path(name).exists():
                    reason = (f"could not load '{choice}' from the Hugging Face Hub (no connection, or no such "
                              f"model): {reason}")
                raise ModelChoiceError(reason) from None
        return self.loaded[choice]


class ModelChoiceError(ValueError):
    """The chosen model cannot be loaded; the message is meant for the page."""


def analyse(image_path, choice: str = DEFAULT_CHOICE, heatmap: bool = True, band: float = DEFAULT_BAND,
            cache: ModelCache | None = None) -> dict:
    """
    Everything the page shows for one image.

    Args:
        image_path (`str`, `Path` or `PIL.Image.Image`): the uploaded file (or image).
        choice (`str`): model choice (`"default"`, a folder or a Hub id).
        heatmap (`bool`): compute the Grad-CAM overlay.
        band (`float`): half-width of the uncertain band around the decision threshold.
        cache ([`ModelCache`], *optional*): loaded models.

    Returns:
        `dict` with `authenticity` (label -> probability), `decision` (a class or `"uncertain"`), `ai_probability`,
        `objects` (label -> score), `milliseconds`, `heatmap` (a PIL image or `None`), `provenance` (what the file
        declares about its origin, see `dualsight_hf.inference.provenance`; `None` for an image without a file),
        `decided_by` (`"pixels"`, or `"provenance"` for a validly signed AI claim) and `error` (a one-line
        message, with everything else empty, when the file or model cannot be used).
    """
    from .inference.gradcam import grad_cam, overlay

    empty = {"authenticity": {}, "decision": None, "ai_probability": None, "objects": {}, "milliseconds": None,
             "heatmap": None, "provenance": None, "decided_by": None, "error": None}
    if image_path is None:
        return {**empty, "error": "Upload an image first."}
    try:
        predictor = (cache or ModelCache()).get(choice)
        start = time.perf_counter()
        image = load_image(image_path, name=Path(str(image_path)).name if not hasattr(image_path, "size") else None)
        prepared = predictor.prepare(image)
        scored = predictor.score([prepared], uncertain_band=band)[0]
        evidence = None if hasattr(image_path, "size") else read_provenance(image_path)
        decided = predictor.with_provenance(scored, evidence)
        milliseconds = (time.perf_counter() - start) * 1000
    except (ImageLoadError, ModelChoiceError) as error:
        return {**empty, "error": str(error)}
    config = predictor.model.config
    authenticity = {entry["label"]: entry["score"] for entry in scored["authenticity"]}
    result = {**empty, "decision": decided["label"], "milliseconds": milliseconds, "authenticity": authenticity,
              "ai_probability": authenticity[config.id2label[1]] if len(authenticity) == 2 else None,
              "objects": {o["label"]: o["score"] for o in scored["objects"]}, "decided_by": decided["decided_by"],
              "provenance": decided["provenance"]}
    if heatmap:
        target = config.label2id[scored["authenticity"][0]["label"]]
        cam = grad_cam(predictor.model, predictor.model_inputs([prepared]), target)
        result["heatmap"] = overlay(image, cam) if cam is not None else None
    return result


def verdict_markdown(result: dict) -> str:
    """The verdict line: decision, probability, time; or the error."""
    if result["error"]:
        return f"**Error:** {result['error']}"
    decision, milliseconds = result["decision"], result["milliseconds"]
    if result["decided_by"] == "provenance":
        return f"**{decision}**: the file carries a validly signed AI claim (see provenance) ({milliseconds:.0f} ms)"
    if decision == UNCERTAIN:
        return (f"**uncertain**: P(ai_generated) = {result['ai_probability']:.3f} is close to the decision "
                f"threshold ({milliseconds:.0f} ms)")
    return f"**{decision}** (p = {result['authenticity'][decision]:.3f}) in {milliseconds:.0f} ms"


def provenance_markdown(result: dict) -> str:
    """The provenance panel: what the file declares about its origin, as separate lines of evidence."""
    evidence = result.get("provenance")
    if result.get("error") or evidence is None:
        return ""
    if evidence["claim"] == "none" and evidence["source"] is None:
        reason = evidence["details"].get("reason")
        return "**Provenance:** no C2PA manifest, IPTC source type or generator metadata" + \
            (f" ({reason})" if reason else "") + "."
    lines = [f"**Provenance:** {evidence['claim'].replace('_', ' ')}, from {evidence['source']}"]
    if evidence["signed"]:
        state = "valid signature" if evidence["valid"] else "INVALID signature (tampered or broken): not a claim"
        lines.append(f"- C2PA manifest: {state}; signer: {evidence['issuer'] or 'unknown'} "
                     f"({evidence['details'].get('trust', 'unknown trust')})")
    else:
        lines.append("- unsigned metadata: evidence only, it does not change the verdict")
    if evidence["generator"]:
        lines.append(f"- generator: {evidence['generator']}")
    if evidence.get("disagrees"):
        lines.append("- **disagrees with the pixel verdict**")
    return "\n".join(lines)


def analyse_batch(paths: list, choice: str = DEFAULT_CHOICE, band: float = DEFAULT_BAND,
                  cache: ModelCache | None = None) -> tuple[list[list], str]:
    """
    Several files at once: rows `[file, decision, P(ai_generated), objects, provenance, error]` and a CSV file of
    them.
    """
    cache = cache or ModelCache()
    rows = []
    for path in paths or []:
        path = getattr(path, "name", path)
        result = analyse(path, choice, heatmap=False, band=band, cache=cache)
        evidence = result["provenance"] or {}
        claim = f"{evidence['source']}: {evidence['claim']}" if evidence.get("source") else ""
        rows.append([Path(str(path)).name, result["decision"] or "", "" if result["ai_probability"] is None else
                     round(result["ai_probability"], 4), ", ".join(result["objects"]), claim, result["error"] or ""])
    handle, csv_path = tempfile.mkstemp(prefix="dualsight-", suffix=".csv")
    with os.fdopen(handle, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(BATCH_HEADERS)
        writer.writerows(rows)
    return rows, csv_path


BATCH_HEADERS = ["file", "decision", "p_ai_generated", "objects", "provenance", "error"]


def build_demo(cache: ModelCache | None = None):
    """The Gradio Blocks app."""
    import gradio as gr

    cache = cache or ModelCache()
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*/*") if p.suffix.lower() in (".jpg", ".png"))

    def single(image, choice, show_heatmap, band):
        # Events run with preprocess=False: the uploaded file's path arrives undecoded, so a broken file reaches
        # DualSight's loader and its clear message instead of failing inside Gradio's own decoding.
        image_path = image.get("path") if isinstance(image, dict) else image
        result = analyse(image_path, choice, show_heatmap, band, cache)
        return (result["authenticity"] or None, verdict_markdown(result), result["objects"] or None,
                result["heatmap"], provenance_markdown(result))

    def batch(files, choice, band):
        rows, csv_path = analyse_batch(files, choice, band, cache)
        return rows, csv_path

    with gr.Blocks(title="DualSight: real or AI-generated?", analytics_enabled=False) as demo:
        gr.Markdown("# DualSight\nIs this image a real photograph or AI-generated, and what is in it? Scores are "
                    "evidence, not proof.")
        with gr.Row():
            choice = gr.Textbox(value=DEFAULT_CHOICE, label="Model: 'default', 'mobile', a local folder or a Hub id",
                                elem_id="model-choice")
            band = gr.Slider(0.0, 0.4, value=DEFAULT_BAND, step=0.01, label="Uncertain band around the threshold",
                             elem_id="band")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                     elem_id="input-image")
                    show_heatmap = gr.Checkbox(value=True, label="Explanation heatmap (Grad-CAM)",
                                               elem_id="heatmap-toggle")
                    run = gr.Button("Analyse", variant="primary", elem_id="analyse")
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    provenance = gr.Markdown(elem_id="provenance")
                    authenticity = gr.Label(label="Authenticity", elem_id="authenticity")
                    objects = gr.Label(label="Objects", num_top_classes=5, elem_id="objects")
                    heatmap = gr.Image(label="What the decision looked at", elem_id="heatmap", interactive=False)
            if examples:  # the repository's examples/ (absent from a wheel install)
                gr.Examples(examples, inputs=image, label="Examples")
            outputs = [authenticity, verdict, objects, heatmap, provenance]
            run.click(single, [image, choice, show_heatmap, band], outputs, preprocess=False)
            image.upload(single, [image, choice, show_heatmap, band], outputs, preprocess=False)
        with gr.Tab("Batch"):
            files = gr.File(file_count="multiple", label="Images", elem_id="batch-files")
            run_batch = gr.Button("Analyse all", elem_id="analyse-batch")
            table = gr.Dataframe(headers=BATCH_HEADERS, label="Results", elem_id="batch-table")
            download = gr.File(label="CSV", elem_id="batch-csv")
            run_batch.click(batch, [files, choice, band], [table, download])
    return demo


def launch(host: str | None = None, port: int | None = None, **kwargs):
    """Start the page (`GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` also choose the address)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo()
    return demo.launch(server_name=host, server_port=port, allowed_paths=[str(EXAMPLES_DIR)], **kwargs)
