"""The `Predictor`: streaming with bounded read-ahead, reading threads and worker processes, compiled and artifact-stream
models, logits in input order."""

import pytest
import torch
from conftest import random_image

from dualsight_hf.inference.predictor import Predictor, PreprocessedInputs, iter_inputs


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(str(tiny_model_dir), batch_size=4, num_workers=0)


def test_stream_reads_ahead_by_at_most_a_batch(predictor):
    consumed = []

    def endless():
        index = 0
        while True:
            consumed.append(index)
            yield f"generated-{index}", random_image(20, 20, seed=index)
            index += 1

    results = []
    for result in predictor.stream(endless, progress=False):
        results.append(result)
        assert len(consumed) <= len(results) + predictor.batch_size
        if len(results) == 10:
            break
    assert [r.path for r in results] == [f"generated-{i}" for i in range(10)]
    assert all(r.label in {"real", "ai_generated"} for r in results)


def test_reading_threads_keep_every_input_once_and_in_order(predictor, many_images):
    def read(**threading):
        return list(PreprocessedInputs(lambda: iter_inputs([many_images]), predictor.prepare, **threading))

    serial, threaded = read(), read(threads=2, chunk=4)
    assert [(i, key, error) for i, key, _, error, _ in threaded] == \
        [(i, key, error) for i, key, _, error, _ in serial]
    assert sum(error is not None for _, _, _, error, _ in threaded) == 1
    for (_, _, ours, _, _), (_, _, reference, _, _) in zip(threaded, serial):
        assert (ours is None) == (reference is None)
        if reference is not None:
            assert all(torch.equal(ours[name], reference[name]) for name in reference)


def test_stream_with_worker_processes_keeps_every_input_once(tiny_model_dir, many_images):
    workers = Predictor(str(tiny_model_dir), batch_size=3, num_workers=2)
    results = list(workers.stream(lambda: iter_inputs([many_images]), progress=False))
    assert sorted(r.index for r in results) == list(range(11))
    assert sum(bool(r.error) for r in results) == 1


def test_compiled_model_gives_the_same_answers(tiny_model_dir, many_images):
    eager = Predictor(str(tiny_model_dir), dtype="float32").predict_paths([many_images])
    compiled = Predictor(str(tiny_model_dir), dtype="float32", compile=True).predict_paths([many_images])
    assert [r.path for r in compiled] == [r.path for r in eager]
    for ours, reference in zip(compiled, eager):
        assert ours.label == reference.label and ours.error == reference.error
        if reference.score is not None:
            assert abs(ours.score - reference.score) < 1e-4


def test_predict_carries_the_artifact_input(artifact_model_dir, many_images):
    from dualsight_hf import load_pipeline

    results = Predictor(str(artifact_model_dir), batch_size=4, num_workers=0).predict_paths([many_images])
    assert len(results) == 11 and sum(bool(r.error) for r in results) == 1
    classifier = load_pipeline(artifact_model_dir)
    for result in results:
        if not result.error:  # the same probabilities as the pipeline, one image at a time
            expected = classifier(result.path, top_k=2)
            assert result.authenticity[0]["label"] == expected[0]["label"]
            assert abs(result.authenticity[0]["score"] - expected[0]["score"]) < 1e-4


def test_logits_are_those_of_score_in_order_and_name_an_unreadable_file(predictor, many_images, tmp_path):
    """`Predictor.logits` goes through the same loop as `predict`: a generator of images and files gives the
    logits `score` decides on, in input order, the bar counts every image, and an unreadable file is named."""
    from dualsight_hf import ImageLoadError, load_image
    from dualsight_hf.models.pipeline import authenticity_probabilities

    class Bar:
        n = 0

        def update(self, count):
            self.n += count

    files = sorted(many_images.iterdir())[:5]
    sources = [load_image(files[0]), *map(str, files[1:])]
    bar = Bar()
    logits = predictor.logits((source for source in sources), bar=bar)
    assert bar.n == 5 and logits.shape == (5, 2)
    scored = predictor.score([predictor.prepare(source) for source in sources])
    for row, answer in zip(logits, scored):
        probabilities = authenticity_probabilities(row, predictor.model.config)
        assert {entry["label"]: entry["score"] for entry in answer["authenticity"]} == pytest.approx(
            {predictor.model.config.id2label[i]: p for i, p in enumerate(probabilities)}, abs=1e-6)
    (tmp_path / "broken.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="broken.png"):
        predictor.logits([str(files[0]), str(tmp_path / "broken.png")])
