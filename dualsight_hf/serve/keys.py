"""API keys of the service: read from a file, compared in constant time."""

import hmac
from pathlib import Path


class KeyFileError(ValueError):
    """The API key file cannot be used; `str(error)` is one line naming the file and the cause."""


class ApiKeys:
    """
    The keys that may call the service, each with the client id it is recorded under.

    The file holds one `CLIENT_ID:KEY` per line; blank lines and lines starting with `#` are ignored. Keys are at
    least 16 characters, client ids and keys are unique.

    Args:
        keys (`dict[str, str]`): key to client id.

    Example:

    ```python
    >>> from dualsight_hf.serve.keys import ApiKeys
    >>> keys = ApiKeys({"s3cret-key-for-uploads": "uploads"})
    >>> keys.client("s3cret-key-for-uploads"), keys.client("guess")
    ('uploads', None)
    ```
    """

    MIN_LENGTH = 16

    def __init__(self, keys: dict[str, str]):
        self._keys = [(key.encode(), client) for key, client in keys.items()]

    @classmethod
    def from_file(cls, path) -> "ApiKeys":
        """Read `CLIENT_ID:KEY` lines from `path`; raises `KeyFileError` on the first bad line."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise KeyFileError(f"{path}: cannot read the API key file ({error.strerror or error})") from None
        keys: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            client, separator, key = (part.strip() for part in line.partition(":"))
            if not separator or not client or not key:
                raise KeyFileError(f"{path}:{number}: expected CLIENT_ID:KEY")
            if len(key) < cls.MIN_LENGTH:
                raise KeyFileError(f"{path}:{number}: the key of {client!r} is shorter than {cls.MIN_LENGTH} "
                                   "characters")
            if key in keys or client in keys.values():
                raise KeyFileError(f"{path}:{number}: {client!r} or its key is already listed")
            keys[key] = client
        if not keys:
            raise KeyFileError(f"{path}: no keys (one CLIENT_ID:KEY per line)")
        return cls(keys)

    def client(self, presented: str | None) -> str | None:
        """The client id of the presented key, or `None`. Every key is compared, each in constant time, so the
        time taken does not tell which key or how much of it matched."""
        if presented is None:
            return None
        presented_bytes = presented.encode()
        found = None
        for key, client in self._keys:
            if hmac.compare_digest(key, presented_bytes):
                found = client
        return found
