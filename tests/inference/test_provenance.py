"""Provenance evidence: C2PA manifests signed here, IPTC source types, generator metadata, the decision rule, and
files that try to break the reader."""

import io
import sys

import pytest
from conftest import AI_SOURCE_TYPE, image_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from dualsight_hf.inference.provenance import (
    CLAIMS,
    GENERATOR_SIGNATURES,
    Provenance,
    decide,
    disagrees,
    match_signature,
    read_provenance,
)

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def png_with(**chunks) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return image_bytes("PNG", pnginfo=info)


def jpeg_with_xmp(source_type: str = "", extra: str = "") -> bytes:
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
           f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" Iptc4xmpExt:DigitalSourceType="{source_type}" {extra}/>'
           "</rdf:RDF></x:xmpmeta>")
    return image_bytes("JPEG", xmp=xmp.encode())


def jpeg_with_exif(**tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        if tag == "user_comment":
            exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + value.encode()
        else:
            exif[{"software": 0x0131, "description": 0x010E}[tag]] = value
    return image_bytes("JPEG", exif=exif)


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_signed_ai_claim(c2pa_signer, fmt, mime):
    evidence = read_provenance(c2pa_signer.sign(image_bytes(fmt), mime))
    assert (evidence.claim, evidence.source, evidence.signed, evidence.valid) == ("ai_generated", "c2pa", True, True)
    assert evidence.issuer == c2pa_signer.ISSUER and evidence.generator == "Example Image Model"
    assert evidence.details["trust"] == "untrusted"  # a test CA is in no trust list: valid, but not trusted
    assert evidence.details["actions"] == ["c2pa.created"]
    assert decide("real", 0.97, evidence) == ("ai_generated", 1.0, "provenance")


def test_signed_edit_of_a_captured_photo(c2pa_signer):
    camera = image_bytes("JPEG", seed=5)
    edited = c2pa_signer.sign(image_bytes("JPEG", seed=6), "image/jpeg", action="c2pa.edited",
                              source_type=IPTC + "compositeWithTrainedAlgorithmicMedia", ingredient=camera)
    evidence = read_provenance(edited)
    assert (evidence.claim, evidence.valid) == ("ai_edited", True)
    assert evidence.details["ingredients"] == ["camera.jpg"]
    assert decide("real", 0.9, evidence)[0] == "ai_generated"


def test_signed_capture(c2pa_signer):
    evidence = read_provenance(c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg",
                                                source_type=IPTC + "digitalCapture"))
    assert (evidence.claim, evidence.signed, evidence.valid) == ("captured", True, True)
    assert decide("ai_generated", 0.9, evidence) == ("ai_generated", 0.9, "pixels")  # never makes an image real


def test_tampered_manifest_is_invalid_and_never_a_claim(c2pa_signer):
    signed = bytearray(c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg"))
    signed[-200] ^= 0xFF  # one byte of the image data after signing
    evidence = read_provenance(bytes(signed))
    assert (evidence.claim, evidence.source, evidence.signed, evidence.valid) == ("none", "c2pa", True, False)
    assert evidence.details["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in evidence.details["validation_codes"]
    assert decide("real", 0.8, evidence) == ("real", 0.8, "pixels")


@pytest.mark.parametrize("data, claim, source, generator", [
    (png_with(parameters="a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"), "ai_generated",
     "metadata", "AUTOMATIC1111 Stable Diffusion WebUI"),
    (png_with(prompt='{"3": {"class_type": "KSampler", "inputs": {}}}', workflow='{"nodes": []}'), "ai_generated",
     "metadata", "ComfyUI"),
    (jpeg_with_exif(user_comment="a dog\nSteps: 30, Sampler: DPM++ 2M, Seed: 7"), "ai_generated", "metadata",
     "AUTOMATIC1111 Stable Diffusion WebUI"),
    (jpeg_with_exif(software="NovelAI"), "ai_generated", "metadata", "NovelAI"),
    (jpeg_with_xmp(AI_SOURCE_TYPE), "ai_generated", "iptc", None),
    (jpeg_with_xmp(IPTC + "compositeWithTrainedAlgorithmicMedia", 'xmp:CreatorTool="Adobe Firefly"'), "ai_edited",
     "iptc", "Adobe Firefly"),
    (jpeg_with_xmp(IPTC + "digitalCapture"), "captured", "iptc", None),
    (image_bytes("JPEG"), "none", None, None),
    (image_bytes("PNG"), "none", None, None),
])
def test_unsigned_metadata(data, claim, source, generator):
    evidence = read_provenance(data)
    assert (evidence.claim, evidence.source, evidence.signed, evidence.valid) == (claim, source, False, None)
    assert evidence.generator == generator
    assert decide("real", 0.9, evidence) == ("real", 0.9, "pixels")  # unsigned: evidence only


#: One value per signature of the table that it must recognise (a new signature without a sample fails the test).
SIGNATURE_SAMPLES = {
    "ComfyUI": {"png:prompt": '{"4": {"class_type": "CheckpointLoaderSimple"}}'},
    "InvokeAI": {"png:invokeai_metadata": '{"model": "sdxl"}'},
    "Fooocus": {"png:fooocus_scheme": "fooocus"},
    "Stable Diffusion WebUI Forge": {"png:parameters": "x\nSteps: 20, Sampler: Euler, Version: f2.0.1v1.10.1"},
    "AUTOMATIC1111 Stable Diffusion WebUI": {"png:parameters": "x\nSteps: 20, Sampler: Euler, Version: v1.10.1"},
    "NovelAI": {"software": "NovelAI"},
    "Midjourney": {"description": "a castle Job ID: 0c2d3c6e-1b8e-4d8a-9f55-7a4c9b0e1f22"},
    "DALL·E (OpenAI)": {"software": "DALL·E 3"},
    "Adobe Firefly": {"creator_tool": "Adobe Firefly Image 3"},
    "Google Imagen / Gemini": {"credit": "Made with Google AI"},
    "Stable Diffusion": {"software": "Stable Diffusion XL via DreamStudio"},
}


@pytest.mark.parametrize("signature", GENERATOR_SIGNATURES, ids=lambda signature: signature.generator)
def test_every_generator_signature_is_recognised(signature):
    assert signature.generator in SIGNATURE_SAMPLES, f"add a sample for {signature.generator}"
    found = match_signature(SIGNATURE_SAMPLES[signature.generator])
    assert found is not None and found[0].generator == signature.generator


def test_camera_metadata_is_not_a_generator():
    assert match_signature({"software": "Adobe Lightroom Classic 13.1", "description": "harbour at dawn"}) is None


def test_forged_capture_claim_never_lowers_the_pixel_verdict():
    forged = read_provenance(jpeg_with_xmp(IPTC + "digitalCapture"))
    assert decide("ai_generated", 0.88, forged) == ("ai_generated", 0.88, "pixels")
    assert disagrees("ai_generated", forged) and not disagrees("real", forged)


@settings(max_examples=200, deadline=None)
@given(claim=st.sampled_from(CLAIMS), source=st.sampled_from(["c2pa", "iptc", "metadata", None]),
       signed=st.booleans(), valid=st.sampled_from([True, False, None]),
       evidence=st.sampled_from(["both", "pixels"]))
def test_no_evidence_makes_an_ai_verdict_real(claim, source, signed, valid, evidence):
    provenance = Provenance(claim=claim, source=source, signed=signed, valid=valid)
    assert decide("ai_generated", 0.7, provenance, evidence)[0] == "ai_generated"
    assert decide("real", 0.7, provenance, evidence)[0] in ("real", "ai_generated")


def test_provenance_only_mode():
    signed = Provenance(claim="ai_generated", source="c2pa", signed=True, valid=True)
    assert decide(None, None, signed, "provenance") == ("ai_generated", 1.0, "provenance")
    assert decide(None, None, Provenance(), "provenance") == ("uncertain", None, "none")
    with pytest.raises(ValueError, match="evidence must be one of"):
        decide("real", 0.5, None, "metadata")


@pytest.mark.parametrize("data, reason", [
    (image_bytes("JPEG", xmp=b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
                                 b"<x:xmpmeta>&b;</x:xmpmeta>"), "entity"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 5, "unreadable metadata"),
    (b"", "unreadable metadata"),
])
def test_hostile_files_give_none_with_a_reason(data, reason):
    evidence = read_provenance(data)
    assert evidence.claim == "none" and not evidence.signed and reason in evidence.details["reason"]


def test_oversized_xmp_is_not_parsed(monkeypatch):
    monkeypatch.setattr("dualsight_hf.inference.provenance.MAX_XMP_BYTES", 1000)
    evidence = read_provenance(jpeg_with_xmp(AI_SOURCE_TYPE, extra=f'xmp:Label="{"x" * 2000}"'))
    assert evidence.claim == "none" and "over the limit of 1000" in evidence.details["reason"]


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(st.integers(min_value=0, max_value=4000),
                                                                   max_size=4))
def test_truncated_or_corrupted_files_never_raise(cut, flips):
    for data in (png_with(parameters="x\nSteps: 2, Sampler: Euler"), jpeg_with_xmp(AI_SOURCE_TYPE)):
        damaged = bytearray(data[:max(cut, 1)])
        for position in flips:
            if position < len(damaged):
                damaged[position] ^= 0x5A
        assert read_provenance(bytes(damaged)).claim in CLAIMS


def test_signed_file_truncated_is_not_a_valid_claim(c2pa_signer):
    signed = c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg")
    for cut in (len(signed) // 3, len(signed) // 2, len(signed) - 10):
        evidence = read_provenance(signed[:cut])
        assert not evidence.signed_ai_claim


def test_files_and_opened_images(tmp_path):
    path = tmp_path / "gen.png"
    path.write_bytes(png_with(parameters="x\nSteps: 20, Sampler: Euler"))
    assert read_provenance(path).claim == read_provenance(str(path)).claim == "ai_generated"
    assert read_provenance(Image.open(io.BytesIO(path.read_bytes()))).claim == "ai_generated"
    missing = read_provenance(tmp_path / "absent.png")
    assert missing.claim == "none" and "unreadable metadata" in missing.details["reason"]


def test_metadata_never_reaches_the_model(tiny_model_dir):
    """The model inputs of a file with provenance metadata are those of the same pixels without it."""
    from dualsight_hf.inference.predictor import Predictor

    predictor = Predictor(str(tiny_model_dir), num_workers=0)
    plain = image_bytes("PNG", seed=9)
    declared = image_bytes("PNG", seed=9, pnginfo=_info(parameters="x\nSteps: 20, Sampler: Euler"))
    assert declared != plain
    with_metadata, without = predictor.prepare(declared), predictor.prepare(plain)
    assert all((with_metadata[name] == without[name]).all() for name in without)


def _info(**chunks):
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return info


def test_without_c2pa_python_a_manifest_is_said_to_be_unchecked(c2pa_signer, monkeypatch):
    signed = c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg")
    monkeypatch.setitem(sys.modules, "c2pa", None)  # as if the provenance extra were not installed
    evidence = read_provenance(signed)
    assert evidence.claim == "none" and not evidence.signed and "not checked" in evidence.details["c2pa"]


def test_hostile_metadata_still_gets_a_pixel_verdict(tiny_model_dir, tmp_path):
    from dualsight_hf.inference.predictor import Predictor

    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><x:xmpmeta>&b;</x:xmpmeta>'
    (tmp_path / "bomb.jpg").write_bytes(image_bytes("JPEG", xmp=bomb))
    (result,) = Predictor(str(tiny_model_dir), num_workers=0).predict_paths([tmp_path / "bomb.jpg"])
    assert result.error is None and result.label in ("real", "ai_generated") and result.decided_by == "pixels"
    assert result.provenance["claim"] == "none" and "entity" in result.provenance["details"]["reason"]
