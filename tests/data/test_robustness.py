"""Property-based tests: random and mutated bytes never raise anything but `ImageLoadError`, and never hang."""

import io

from conftest import random_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.models.images import ImageLoadError, load_image


def _valid_files() -> list[bytes]:
    files = []
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
        buffer = io.BytesIO()
        random_image(24, 16, seed=len(files)).save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


VALID = _valid_files()


@st.composite
def mutated_image_bytes(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def check(data: bytes) -> None:
    try:
        image = load_image(data, name="case")
    except ImageLoadError as error:
        assert str(error).startswith("case: ") and "\n" not in str(error)
    else:
        assert isinstance(image, Image.Image) and image.mode == "RGB"


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_image_bytes())
def test_mutated_valid_files(data):
    check(data)


_PREDICTORS = {}


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(mutated_image_bytes(), min_size=1, max_size=4))
def test_predict_path_scores_or_reports_every_file(tiny_model_dir, tmp_path, files):
    predictor = _PREDICTORS.setdefault(str(tiny_model_dir), Predictor(str(tiny_model_dir), batch_size=2))
    paths = []
    for index, data in enumerate(files):
        path = tmp_path / f"case-{index}-{len(list(tmp_path.iterdir()))}.png"
        path.write_bytes(data)
        paths.append(path)
    results = predictor.predict_paths(paths, progress=False)
    assert [r.path for r in results] == [str(p) for p in paths]
    for result in results:
        assert (result.error is None) != (result.label is None)
