"""Makers of test inputs that the test suite and the benchmarks share (as `transformers.testing_utils`): random
images, their encoded bytes, and C2PA-signed images from a throw-away certificate chain. Signing needs the
`provenance` extra (c2pa-python) and `cryptography` (the `test` extra); both are imported only when a signer is made.
"""

import io

import numpy as np
from PIL import Image


def random_image(width: int = 48, height: int = 40, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A `width` x `height` image of uniform random pixels (seeded), in `mode`."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def image_bytes(format: str = "JPEG", seed: int = 0, **save_options) -> bytes:
    """A random 64x48 image in `format`, with Pillow's save options (`pnginfo`, `exif`, `xmp`, ...)."""
    buffer = io.BytesIO()
    random_image(64, 48, seed=seed).save(buffer, format=format, **save_options)
    return buffer.getvalue()


def png_bytes(seed: int = 0) -> bytes:
    """The bytes of a random PNG, as an upload would send them."""
    return image_bytes("PNG", seed)


AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


class C2paSigner:
    """Signs test images with C2PA manifests, with a certificate chain made here (a CA and a P-256 end-entity key,
    ES256): valid signatures from a signer that no trust list knows."""

    ISSUER = "Example Generator Inc"

    def __init__(self):
        import datetime

        import c2pa
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def name(common, organisation):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])

        def usage(signing: bool):
            return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=False,
                                 data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
                                 crl_sign=not signing, encipher_only=False, decipher_only=False)

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

        def certificate(subject, issuer, public_key, is_ca):
            builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                       .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + datetime.timedelta(days=30))
                       .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
                       .add_extension(usage(not is_ca), critical=True)
                       .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
            if not is_ca:
                builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                                 critical=False)
                           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                          critical=False))
            return builder.sign(ca_key, hashes.SHA256())

        ca_name = name("DualSight Test CA", "DualSight Tests")
        ca = certificate(ca_name, ca_name, ca_key.public_key(), True)
        leaf = certificate(name("Test Signer", self.ISSUER), ca_name, key.public_key(), False)
        chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.c2pa = c2pa
        self.signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=private,
                                                                ta_url=None))

    def sign(self, image_bytes: bytes, mime_type: str, action: str = "c2pa.created",
             source_type: str | None = AI_SOURCE_TYPE, ingredient: bytes | None = None) -> bytes:
        """`image_bytes` with a manifest whose action is `action` with `source_type`; with `ingredient`, a parent
        ingredient that a `c2pa.opened` action opens first (an edit)."""
        entry = {"action": action, "softwareAgent": {"name": "Example Image Model"}}
        if source_type:
            entry["digitalSourceType"] = source_type
        opened = {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}
        actions = [entry] if ingredient is None else [opened, entry]  # an edit opens its parent first
        manifest = {"claim_generator_info": [{"name": "dualsight-tests", "version": "1"}], "title": "image",
                    "format": mime_type, "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
        builder = self.c2pa.Builder(manifest)
        if ingredient is not None:
            builder.add_ingredient({"title": "camera.jpg", "relationship": "parentOf", "label": "parent"}, "image/jpeg",
                                   io.BytesIO(ingredient))
        signed = io.BytesIO()
        builder.sign(self.signer, mime_type, io.BytesIO(image_bytes), signed)
        return signed.getvalue()


__all__ = ["AI_SOURCE_TYPE", "C2paSigner", "image_bytes", "png_bytes", "random_image"]
