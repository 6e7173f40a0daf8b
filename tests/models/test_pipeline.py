import io

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, pipeline

from dualsight_hf import DualSightImageClassificationPipeline, load_image_processor, load_pipeline
from dualsight_hf.models.pipeline import object_predictions


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return load_pipeline(tiny_model_dir)


def expected_logits(tiny_model_dir, image):
    model = AutoModelForImageClassification.from_pretrained(tiny_model_dir).eval()
    inputs = load_image_processor(str(tiny_model_dir))(image, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs)


def test_default_output_is_the_stock_image_classification_list(classifier, tiny_model_dir, image_dir):
    assert isinstance(classifier, DualSightImageClassificationPipeline)
    result = classifier(str(image_dir / "a.jpg"))
    assert [set(r) for r in result] == [{"label", "score"}] * 2
    assert {r["label"] for r in result} == {"real", "ai_generated"}
    assert result[0]["score"] >= result[1]["score"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)
    from dualsight_hf import load_image

    logits = expected_logits(tiny_model_dir, load_image(image_dir / "a.jpg")).logits
    probabilities = torch.softmax(logits, -1)[0]
    assert result[0]["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)


def test_objects_head_multi_label_threshold_and_top_k(classifier, tiny_model_dir, image_dir):
    from dualsight_hf import load_image

    object_logits = expected_logits(tiny_model_dir, load_image(image_dir / "b.png")).object_logits[0]
    scores = torch.sigmoid(object_logits)
    everything = classifier(str(image_dir / "b.png"), head="objects", object_threshold=0.0, top_k=10)
    assert [r["label"] for r in everything] == [classifier.model.config.object_id2label[i]
                                                for i in scores.argsort(descending=True).tolist()]
    ordered = scores.sort(descending=True).values.tolist()
    threshold = (ordered[1] + ordered[2]) / 2  # between the second and third score: exactly two are kept
    kept = classifier(str(image_dir / "b.png"), head="objects", object_threshold=threshold, top_k=10)
    assert [r["label"] for r in kept] == [r["label"] for r in everything[:2]]
    assert len(classifier(str(image_dir / "b.png"), head="objects", object_threshold=0.0, top_k=1)) == 1


def test_both_heads(classifier, image_dir):
    result = classifier(str(image_dir / "a.jpg"), head="both", object_threshold=0.0)
    assert set(result) == {"authenticity", "objects", "decision", "provenance", "decided_by"}
    assert result["provenance"]["claim"] == "none" and result["decided_by"] == "pixels"
    assert len(result["authenticity"]) == 2 and len(result["objects"]) == 3
    assert result["decision"] == result["authenticity"][0]["label"]  # uncalibrated: threshold 0.5, no band


def test_input_forms_and_batching_agree(classifier, image_dir):
    from dualsight_hf import load_image

    path = str(image_dir / "a.jpg")
    image = load_image(path)
    by_path = classifier(path)
    by_pil = classifier(image)
    by_array = classifier(np.asarray(image))
    batched = classifier([path, image, path], batch_size=2)
    assert len(batched) == 3
    for other in (by_pil, by_array, *batched):
        assert other[0]["label"] == by_path[0]["label"]
        assert other[0]["score"] == pytest.approx(by_path[0]["score"], abs=1e-5)


def test_top_k_is_honoured(classifier, image_dir):
    assert len(classifier(str(image_dir / "a.jpg"), top_k=1)) == 1


def test_bad_head_and_missing_object_head_are_refused(classifier, tmp_path, image_dir):
    with pytest.raises(ValueError, match="head must be one of"):
        classifier(str(image_dir / "a.jpg"), head="faces")
    from conftest import save_tiny_model

    no_objects = load_pipeline(save_tiny_model(tmp_path / "m", with_objects=False))
    with pytest.raises(ValueError, match="needs an object head"):
        no_objects(str(image_dir / "a.jpg"), head="objects")


def test_single_label_object_head_gives_softmax(tmp_path, image_dir):
    from conftest import save_tiny_model

    single = load_pipeline(save_tiny_model(tmp_path / "m", object_problem_type="single_label_classification"))
    result = single(str(image_dir / "a.jpg"), head="objects", top_k=3)
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_saved_folder_asks_for_trust_remote_code_in_the_stock_call(tiny_model_dir):
    # config.json carries `custom_pipelines`, which transformers checks before its own registry
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("image-classification", model=str(tiny_model_dir))
    remote = pipeline("image-classification", model=str(tiny_model_dir), trust_remote_code=True)
    assert type(remote).__name__ == "DualSightImageClassificationPipeline"


def test_object_predictions_function():
    class Config:
        object_problem_type = "multi_label_classification"
        object_id2label = {0: "a", 1: "b", 2: "c"}

    result = object_predictions(np.array([2.0, -2.0, 0.0]), Config(), top_k=5, threshold=0.5)
    assert [r["label"] for r in result] == ["a", "c"]
    assert result[0]["score"] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_pipeline_passes_the_artifact_crops(tmp_path, image_dir):
    from conftest import save_tiny_model

    from dualsight_hf import load_image

    model_dir = save_tiny_model(tmp_path / "artifact", artifact_stream={"crop_size": 16, "crops_per_side": 2})
    result = load_pipeline(model_dir)(str(image_dir / "a.jpg"), head="both")
    outputs = expected_logits(model_dir, load_image(image_dir / "a.jpg"))
    probabilities = torch.softmax(outputs.logits, -1)[0]
    assert result["authenticity"][0]["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)
    assert result["decision"] in {"real", "ai_generated"}


def test_both_heads_read_the_provenance_of_files_and_bytes(classifier, c2pa_signer):
    from conftest import image_bytes
    from PIL import Image

    signed = c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg")
    for result in (classifier(signed, head="both"), classifier([signed, signed], head="both", batch_size=2)[1]):
        assert result["decision"] == "ai_generated" and result["decided_by"] == "provenance"
        assert result["provenance"]["signed"] and result["provenance"]["valid"]
    decoded = classifier(Image.open(io.BytesIO(signed)), head="both")  # a decoded image: no file to read
    assert "provenance" not in decoded
