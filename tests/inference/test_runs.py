"""A `dualsight predict` run: results written as they come, counts, resuming (several ranks: see
test_predictor.py's two-process test)."""

from conftest import random_image

from dualsight_hf.inference.predictor import Predictor, iter_inputs
from dualsight_hf.inference.results import read_results
from dualsight_hf.inference.runs import write_predictions


def test_a_run_counts_what_it_scored_and_a_resumed_run_scores_only_the_rest(tiny_model_dir, image_dir, tmp_path):
    predictor = Predictor(str(tiny_model_dir), batch_size=2, num_workers=0, evidence="pixels")
    (tmp_path / "broken.png").write_bytes(b"")
    paths = [str(image_dir), str(tmp_path / "broken.png")]
    out = tmp_path / "results.jsonl"
    run = write_predictions(predictor, lambda: iter_inputs(paths), out, "jsonl")
    assert (run.scored, run.failed, run.kept) == (3, 1, 0)
    assert [result.error is None for result in read_results(out)] == [True, True, True, False]
    random_image(seed=9).save(tmp_path / "new.png")
    again = write_predictions(predictor, lambda: iter_inputs([*paths, str(tmp_path / "new.png")]), out, "jsonl",
                              resume=True)
    assert (again.scored, again.failed, again.kept) == (1, 0, 4)
    assert [result.path for result in read_results(out)][-1] == str(tmp_path / "new.png")
