"""API keys: the file format, its one-line errors, and which client a key belongs to."""

import pytest

from dualsight_hf.serve.keys import ApiKeys, KeyFileError

UPLOADS = "uploads-0123456789abcdef"
AUDIT = "audit-0123456789abcdef01"


def test_keys_name_their_clients(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# who may call\nuploads:{UPLOADS}\n\n audit : {AUDIT} \n")
    keys = ApiKeys.from_file(path)
    assert keys.client(UPLOADS) == "uploads" and keys.client(AUDIT) == "audit"
    assert keys.client(UPLOADS[:-1]) is None and keys.client("") is None and keys.client(None) is None


@pytest.mark.parametrize("text, message", [
    (f"{UPLOADS}\n", "expected CLIENT_ID:KEY"),
    ("uploads:short\n", "shorter than 16"),
    (f"uploads:{UPLOADS}\nuploads:{AUDIT}\n", "already listed"),
    ("# nothing\n", "no keys"),
])
def test_bad_key_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=message) as caught:
        ApiKeys.from_file(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read the API key file"):
        ApiKeys.from_file(tmp_path / "absent")
