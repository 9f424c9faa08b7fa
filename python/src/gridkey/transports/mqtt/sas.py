"""Azure IoT Hub device SAS tokens ("Control access to IoT Hub with shared access signatures").

    SharedAccessSignature sr={url-encoded resource}&sig={url-encoded signature}&se={expiry}
    resource  = {hub host name}/devices/{device id}
    signature = base64(HMAC-SHA256(base64-decoded device key, url-encoded resource + "\\n" + expiry))

Written by hand (twenty lines of the standard library): the Azure SDK that mints these pulls in
its whole device client, and a gateway should not carry a second MQTT stack for one HMAC.
The token is a credential: it goes into the MQTT password and nowhere else (never a log line).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import quote


def window(now: float, ttl: int) -> tuple[int, int]:
    """(expiry, renew at) of the token for ``now``: tokens are minted on a grid of ``ttl`` seconds.

    A token minted at ``now`` expires at the end of the *next* grid window, so it is valid for
    between ``ttl`` and ``2 * ttl`` seconds and is renewed at the window edge, ``ttl`` seconds
    before it expires. The same key, device and window always give the same token, so whoever
    provisions a broker's credential (``gridkey bridge sas``) and the bridge agree on it.
    """
    start = int(now) // ttl * ttl
    return start + 2 * ttl, start + ttl


def decode_key(text: str) -> bytes:
    """A device key as Azure shows it (base64)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the device key must be base64 (as the Azure portal shows it)") from None
    if len(key) < 16:
        raise ValueError("the device key is too short (Azure device keys are 32 or 64 bytes)")
    return key


def resource(hub: str, device: str) -> str:
    return f"{hub}/devices/{device}"


def token(hub: str, device: str, key: bytes, expiry: int) -> str:
    """The SAS token for ``device`` on ``hub``, valid until ``expiry`` (unix seconds)."""
    sr = quote(resource(hub, device), safe="")
    sig = base64.b64encode(hmac.new(key, f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={quote(sig, safe='')}&se={expiry}"


def expiry_of(tok: str) -> int | None:
    """The ``se`` of a token (so a bridge knows when to renew one it was given), or None."""
    for part in tok.removeprefix("SharedAccessSignature ").split("&"):
        name, _, value = part.partition("=")
        if name == "se" and value.isdigit():
            return int(value)
    return None
