"""
Provenance evidence: what an image file declares about its own origin, read beside the pixel verdict.

In order of strength: a C2PA manifest (Content Credentials, read and validated with `c2pa-python`, the `provenance`
extra), the IPTC digital source type in XMP, and generator signatures in ordinary metadata (PNG text chunks, EXIF
`Software` / `ImageDescription` / `UserComment`, XMP creator tool) matched against `GENERATOR_SIGNATURES`. Metadata is
attacker-controlled: only a validly signed C2PA claim ever changes a decision (see `decide`), and nothing here can make
an image count as real. Reading never raises: a malformed, oversized or truncated file gives a claim of `"none"` with
the reason in `details`.
"""

import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

CLAIMS = ("ai_generated", "ai_edited", "captured", "none")
EVIDENCE = ("both", "pixels", "provenance")

#: IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/) and the claim each makes.
SOURCE_TYPE_CLAIMS = {
    "trainedAlgorithmicMedia": "ai_generated",
    "compositeWithTrainedAlgorithmicMedia": "ai_edited",
    "digitalCapture": "captured",
    "computationalCapture": "captured",
    "negativeFilm": "captured",
    "positiveFilm": "captured",
}
#: The actions that create an asset; any other action with an AI source type edits one.
CREATING_ACTIONS = ("c2pa.created",)

#: Files larger than this are not searched for provenance (the pixel verdict is still given).
MAX_FILE_BYTES = 256 * 2**20
#: XMP packets larger than this are ignored (XMP bombs).
MAX_XMP_BYTES = 2**20
#: Text values longer than this are cut before matching.
MAX_TEXT_CHARS = 65536

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
              "HEIF": "image/heif", "AVIF": "image/avif", "GIF": "image/gif"}


@dataclass(frozen=True)
class Signature:
    """
    How a generator marks its files in ordinary metadata.

    Args:
        generator (`str`): the name reported.
        fields (`tuple[str, ...]`): where to look: PNG text chunk keys (`"png:parameters"`), or `"software"`,
            `"description"`, `"user_comment"`, `"creator_tool"` (EXIF and XMP), `"any"` (every text value).
        pattern (`str`): a regular expression searched in the value (case-insensitive); `""` matches the field's
            mere presence.
    """

    generator: str
    fields: tuple
    pattern: str = ""


#: Known generator signatures, most specific first (the first match names the generator).
GENERATOR_SIGNATURES = (
    Signature("ComfyUI", ("png:prompt", "png:workflow"), r'"class_type"|"nodes"'),
    Signature("InvokeAI", ("png:invokeai_metadata", "png:sd-metadata"), ""),
    Signature("Fooocus", ("png:fooocus_scheme",), ""),
    Signature("Fooocus", ("png:parameters", "user_comment"), r"Fooocus"),
    Signature("Stable Diffusion WebUI Forge", ("png:parameters", "user_comment"), r"Steps: \d+.*Version: f\d"),
    Signature("AUTOMATIC1111 Stable Diffusion WebUI", ("png:parameters", "user_comment"), r"Steps: \d+.*Sampler:"),
    Signature("NovelAI", ("software", "png:software", "png:source"), r"NovelAI"),
    Signature("Midjourney", ("any",), r"midjourney|Job ID: [0-9a-f-]{36}"),
    Signature("DALL·E (OpenAI)", ("any",), r"DALL[·\-. ]?E|OpenAI"),
    Signature("Adobe Firefly", ("any",), r"Adobe Firefly"),
    Signature("Google Imagen / Gemini", ("any",), r"Imagen|Gemini|Made with Google AI"),
    Signature("Stable Diffusion", ("any",), r"Stable Diffusion|stability\.ai|DreamStudio"),
)


@dataclass
class Provenance:
    """
    What one image declares about its origin.

    Args:
        claim (`str`): `"ai_generated"`, `"ai_edited"`, `"captured"` or `"none"`.
        source (`str`, *optional*): where the claim comes from: `"c2pa"`, `"iptc"` or `"metadata"`; `None` without one.
        signed (`bool`): the claim is in a C2PA manifest.
        valid (`bool`, *optional*): the manifest's signature and hashes validate (`None` when nothing is signed).
            A signer that is in no trust list is still valid; `details["trust"]` says `"untrusted"`.
        issuer (`str`, *optional*): the organisation of the signing certificate.
        generator (`str`, *optional*): the tool or model named (claim generator, software agent or signature).
        details (`dict`): the evidence read, and `reason` when the file could not be read for provenance.

    Example:

    ```python
    >>> from dualsight_hf.inference.provenance import read_provenance
    >>> read_provenance(b"not an image").as_dict()["claim"]
    'none'
    ```
    """

    claim: str = "none"
    source: str | None = None
    signed: bool = False
    valid: bool | None = None
    issuer: str | None = None
    generator: str | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def report(self, label: str | None) -> dict:
        """The evidence as a dict, with `disagrees`: it contradicts the pixel verdict `label` (see `disagrees`)."""
        return {**self.as_dict(), "disagrees": disagrees(label, self)}

    def decide(self, label: str | None, score: float | None = None, evidence: str = "both") -> tuple:
        """`decide(label, score, self, evidence)`: the final label, its score, and what decided it."""
        return decide(label, score, self, evidence)

    @property
    def signed_ai_claim(self) -> bool:
        """A validly signed claim that the image was made or changed by AI: the only provenance that decides."""
        return self.signed and bool(self.valid) and self.claim in ("ai_generated", "ai_edited")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _source_type_claim(value: str | None) -> str | None:
    if not value:
        return None
    return SOURCE_TYPE_CLAIMS.get(value.rstrip("/").rsplit("/", 1)[-1])


def c2pa_available() -> bool:
    """Whether `c2pa-python` (the `provenance` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("c2pa") is not None


def read_c2pa(data: bytes, mime_type: str) -> Provenance | None:
    """The claim of the active C2PA manifest, `None` without a manifest or without `c2pa-python`."""
    try:
        import c2pa
    except ImportError:
        return None
    try:
        store = json.loads(c2pa.Reader(mime_type, io.BytesIO(data)).json())
    except Exception as error:  # c2pa raises its own error types, ManifestNotFound included
        if "ManifestNotFound" in str(error) or "JUMBF" in str(error):
            return None
        return Provenance(source="c2pa", signed=True, valid=False,
                          details={"reason": f"unreadable C2PA manifest ({_first_line(error)[:200]})"})
    manifest = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    codes = [status.get("code", "") for status in store.get("validation_status") or []]
    state = store.get("validation_state") or ("Invalid" if any(_is_failure(code) for code in codes) else "Valid")
    valid = state in ("Valid", "Trusted") and not any(_is_failure(code) for code in codes)
    actions = [action for assertion in manifest.get("assertions", [])
               if assertion.get("label", "").startswith("c2pa.actions")
               for action in (assertion.get("data") or {}).get("actions", [])]
    claim = "none"
    for action in actions:
        found = _source_type_claim(action.get("digitalSourceType"))
        if found in ("ai_generated", "ai_edited"):
            claim = "ai_generated" if (found == "ai_generated" and action.get("action") in CREATING_ACTIONS) \
                else "ai_edited"
            if claim == "ai_generated":
                break
        elif found == "captured" and claim == "none":
            claim = "captured"
    signature = manifest.get("signature_info") or {}
    agents = [action.get("softwareAgent") for action in actions if action.get("softwareAgent")]
    agent = agents[0].get("name") if agents and isinstance(agents[0], dict) else (agents[0] if agents else None)
    tools = manifest.get("claim_generator_info") or [{}]
    generator = agent or tools[0].get("name") or manifest.get("claim_generator")
    details = {"validation_state": state, "trust": "trusted" if state == "Trusted" else
               ("untrusted" if "signingCredential.untrusted" in codes else ("invalid" if not valid else "valid")),
               "validation_codes": codes, "actions": [action.get("action") for action in actions],
               "digital_source_types": [action.get("digitalSourceType") for action in actions
                                        if action.get("digitalSourceType")],
               "ingredients": [ingredient.get("title") for ingredient in manifest.get("ingredients", [])],
               "common_name": signature.get("common_name")}
    return Provenance(claim=claim if valid else "none", source="c2pa", signed=True, valid=valid,
                      issuer=signature.get("issuer"), generator=generator, details=details)


def _is_failure(code: str) -> bool:
    """C2PA status codes that mean a broken or tampered manifest (not an untrusted signer)."""
    return code.endswith((".mismatch", ".missing", ".invalid", ".malformed", ".expired", ".revoked")) or \
        code in ("claimSignature.mismatch", "general.error", "signingCredential.invalid")


def _xmp_text(image: Image.Image) -> str:
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    if isinstance(packet, str):
        packet = packet.encode("utf-8", "replace")
    if len(packet) > MAX_XMP_BYTES:
        raise ValueError(f"XMP packet of {len(packet)} bytes is over the limit of {MAX_XMP_BYTES}")
    text = packet.decode("utf-8", "replace")
    if "<!ENTITY" in text or "<!DOCTYPE" in text:
        raise ValueError("XMP with DOCTYPE or entity declarations (refused: entity expansion)")
    return text


def _xmp_value(text: str, name: str) -> str | None:
    """A property's value in an XMP packet, as an attribute, an element or an `rdf:resource`."""
    match = re.search(rf'{name}\s*=\s*"([^"]{{0,2048}})"', text) or \
        re.search(rf"<{name}[^>]*?rdf:resource\s*=\s*\"([^\"]{{0,2048}})\"", text) or \
        re.search(rf"<{name}>\s*(?:<rdf:Alt>\s*<rdf:li[^>]*>)?([^<]{{0,2048}})<", text)
    return match.group(1).strip() if match else None


def _exif_texts(image: Image.Image) -> dict:
    if image.format == "PNG" and "exif" not in image.info:
        return {}  # Pillow would decode the whole image to look for an eXIf chunk after the pixels
    exif = image.getexif()
    texts = {"software": exif.get(0x0131), "description": exif.get(0x010E), "artist": exif.get(0x013B)}
    comment = exif.get_ifd(0x8769).get(0x9286)
    if isinstance(comment, bytes):  # an 8-byte character code, then the text
        encoding = "utf-16" if comment[:8].startswith(b"UNICODE") else "latin-1"
        comment = comment[8:].decode(encoding, "replace").strip("\x00")
    texts["user_comment"] = comment
    return {key: str(value)[:MAX_TEXT_CHARS] for key, value in texts.items() if value}


def match_signature(fields: dict) -> tuple[Signature, str] | None:
    """The first of `GENERATOR_SIGNATURES` that `fields` (name to text) match, with the field it matched in."""
    for signature in GENERATOR_SIGNATURES:
        names = fields if "any" in signature.fields else [name for name in signature.fields if name in fields]
        for name in names:
            if not signature.pattern or re.search(signature.pattern, fields[name], re.IGNORECASE | re.DOTALL):
                return signature, name
    return None


def read_metadata(image: Image.Image) -> Provenance:
    """The unsigned evidence of an opened image: IPTC digital source type in XMP, then generator signatures."""
    xmp = _xmp_text(image)
    fields = {f"png:{key.lower()}": value[:MAX_TEXT_CHARS] for key, value in image.info.items()
              if isinstance(value, str) and image.format == "PNG" and key != "XML:com.adobe.xmp"}  # XMP: below
    fields.update(_exif_texts(image))
    for name, key in (("creator_tool", "xmp:CreatorTool"), ("description", "dc:description"),
                      ("credit", "photoshop:Credit")):
        value = _xmp_value(xmp, key) if xmp else None
        if value:
            fields.setdefault(name, value)
    source_type = _xmp_value(xmp, "Iptc4xmpExt:DigitalSourceType") if xmp else None
    found = match_signature(fields)
    generator = found[0].generator if found else None
    details = {"fields": sorted(fields)}
    if found:
        details["matched"] = found[1]
    claim = _source_type_claim(source_type)
    if claim:
        return Provenance(claim=claim, source="iptc", generator=generator,
                          details={**details, "digital_source_type": source_type})
    if found:
        return Provenance(claim="ai_generated", source="metadata", generator=generator, details=details)
    return Provenance(details=details)


def read_provenance(source) -> Provenance:
    """
    The provenance evidence of one image file. Never raises: whatever goes wrong is a claim of `"none"` with
    `details["reason"]`.

    Args:
        source (`str`, `os.PathLike`, `bytes` or `PIL.Image.Image`): the file, its bytes, or an opened image (whose
            metadata Pillow kept; C2PA needs the file's bytes and is then not read).

    Returns:
        [`Provenance`]: a validly signed C2PA claim first, else an IPTC digital source type, else a generator
        signature, else `"none"`.

    Example:

    ```python
    >>> from dualsight_hf.inference.provenance import read_provenance
    >>> read_provenance("examples/real/chelsea.png").claim
    'none'
    ```
    """
    try:
        if isinstance(source, Image.Image):
            image, data = source, None
        else:
            data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read_file(Path(source))
            if len(data) > MAX_FILE_BYTES:
                return Provenance(details={"reason": f"file of {len(data)} bytes is over the provenance limit"})
            image = Image.open(io.BytesIO(data))
        # a manifest is a JUMBF box labelled "c2pa": without those bytes there is nothing to validate
        has_manifest = data is not None and b"c2pa" in data
        signed = read_c2pa(data, MIME_TYPES.get(image.format, "image/jpeg")) if has_manifest else None
        unsigned = read_metadata(image)
        if signed is None:
            if has_manifest and not c2pa_available():
                unsigned.details["c2pa"] = "a manifest may be present but was not checked: pip install " \
                                           "dualsight-hf[provenance]"
            return unsigned
        if unsigned.claim != "none":  # reported beside the manifest, never instead of it
            signed.details["metadata"] = unsigned.as_dict()
        return signed
    except Exception as error:  # malformed files, truncated chunks, limits: evidence missing, verdict unaffected
        return Provenance(details={"reason": f"unreadable metadata ({_first_line(error)[:200]})"})


def _read_file(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"file of {path.stat().st_size} bytes is over the provenance limit")
    return path.read_bytes()


def decide(label: str | None, score: float | None, provenance: Provenance | None,
           evidence: str = "both") -> tuple[str | None, float | None, str]:
    """
    The final authenticity label from the pixel verdict and the provenance evidence.

    - `"pixels"`: the pixel verdict alone.
    - `"both"` (default): a validly signed C2PA claim of AI generation or editing makes the label `"ai_generated"`
      (score 1.0, decided by `"provenance"`); anything else leaves the pixel verdict as it is. Unsigned metadata is
      evidence only, and no metadata ever makes an image count as real.
    - `"provenance"`: the signed claim alone, without the pixels: `"ai_generated"` or `"uncertain"`.

    Returns:
        `tuple`: `(label, score, decided_by)` with `decided_by` in `"pixels"`, `"provenance"` or `"none"`.

    Example:

    ```python
    >>> from dualsight_hf.inference.provenance import Provenance, decide
    >>> signed = Provenance(claim="ai_generated", source="c2pa", signed=True, valid=True)
    >>> decide("real", 0.9, signed)
    ('ai_generated', 1.0, 'provenance')
    >>> decide("ai_generated", 0.8, Provenance(claim="captured", source="iptc"))  # unsigned: never lowers it
    ('ai_generated', 0.8, 'pixels')
    ```
    """
    if evidence not in EVIDENCE:
        raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, not {evidence!r}")
    signed_claim = evidence != "pixels" and provenance is not None and provenance.signed_ai_claim
    if signed_claim:
        return "ai_generated", 1.0, "provenance"
    if evidence == "provenance":
        return "uncertain", None, "none"
    return label, score, "pixels"


def disagrees(label: str | None, provenance: Provenance | None) -> bool:
    """Unsigned (or signed) evidence that contradicts the pixel verdict: an AI claim on an image the pixels call
    real, or a capture claim on one they call AI-generated. A flag for a reviewer, not a decision."""
    if provenance is None or provenance.claim == "none" or label in (None, "uncertain"):
        return False
    says_ai = provenance.claim in ("ai_generated", "ai_edited")
    return (says_ai and label == "real") or (not says_ai and label == "ai_generated")
