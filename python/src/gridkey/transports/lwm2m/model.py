"""What an LwM2M endpoint serves: object providers backed by the gateway service.

A provider answers for one object: which instances exist, the values of their readable resources,
and what Write, Execute, Create and Delete do. Providers call the gateway synchronously (the
endpoint runs them off its event loop) and raise :class:`Lwm2mError` with a CoAP code for anything
a server may not do. Nothing here speaks CoAP.

Per meter endpoint (endpoint name = meter id):
    3     Device                      static identity + current time
    33001 GridKey Group Membership    one instance per group the meter belongs to
    33002 GridKey Meter Credential    the meter's certificate facts
    3305  Power Measurement           the meter's latest reading, when a controller decrypts them

The gateway's own endpoint serves Device and one 33001 instance per group (the coordinator's view).
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ... import __version__
from ...crypto.identity import load_certificate
from ...gateway import Gateway, GatewayError
from .objects import (
    DEVICE,
    GROUP_MEMBERSHIP,
    LAST_ERROR_MAX_BYTES,
    METER_CREDENTIAL,
    POWER_MEASUREMENT,
    DeviceRes,
    GroupMembershipRes,
    MembershipState,
    MeterCredentialRes,
    ObjectDef,
    PowerMeasurementRes,
)

Value = str | int | float | bool | bytes
ReadingsSource = Callable[[str], dict | None]  # meter id -> latest decrypted reading, if any


class Lwm2mError(Exception):
    """A refused operation: ``code`` is the CoAP response code (e.g. "4.05")."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail


def _gateway_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except GatewayError as exc:
        code = {400: "4.00", 401: "4.01", 403: "4.03", 404: "4.04", 409: "4.00"}.get(exc.status, "4.00")
        raise Lwm2mError(code, exc.detail) from None


class Provider(ABC):
    definition: ObjectDef

    @abstractmethod
    def instances(self) -> list[int]: ...

    @abstractmethod
    def read(self, iid: int) -> dict[int, Value | dict[int, Value]]:
        """Readable resources of one instance; a multiple resource maps instance ids to values."""

    def write(self, iid: int, rid: int, value: Value) -> None:
        raise Lwm2mError("4.05", f"/{self.definition.id}/{iid}/{rid} is not writable")

    def execute(self, iid: int, rid: int, args: bytes, actor: str) -> None:
        raise Lwm2mError("4.05", f"/{self.definition.id}/{iid}/{rid} is not executable")

    def create(self, values: dict[int, Value], actor: str) -> int:
        raise Lwm2mError("4.05", f"instances of /{self.definition.id} cannot be created")

    def delete(self, iid: int, actor: str) -> None:
        raise Lwm2mError("4.05", f"/{self.definition.id}/{iid} cannot be deleted")


class DeviceProvider(Provider):
    definition = DEVICE

    def __init__(self, serial: str, model: str, device_type: str) -> None:
        self.serial, self.model, self.device_type = serial, model, device_type

    def instances(self) -> list[int]:
        return [0]

    def read(self, iid: int) -> dict[int, Any]:
        return {
            DeviceRes.MANUFACTURER: "GridKey",
            DeviceRes.MODEL_NUMBER: self.model,
            DeviceRes.SERIAL_NUMBER: self.serial,
            DeviceRes.FIRMWARE_VERSION: __version__,
            DeviceRes.ERROR_CODE: {0: 0},
            DeviceRes.CURRENT_TIME: int(time.time()),
            DeviceRes.SUPPORTED_BINDING_AND_MODES: "U",
            DeviceRes.DEVICE_TYPE: self.device_type,
            DeviceRes.SOFTWARE_VERSION: __version__,
        }

    def execute(self, iid: int, rid: int, args: bytes, actor: str) -> None:
        if rid == DeviceRes.REBOOT:
            # A meter's key material lives in the meter; "rebooting" its gateway-side endpoint has no
            # meaning, so it is accepted and does nothing (LwM2M makes Reboot mandatory).
            return
        super().execute(iid, rid, args, actor)


class GroupMembershipProvider(Provider):
    """33001: one instance per group of the meter (or, for the gateway endpoint, per group)."""

    definition = GROUP_MEMBERSHIP

    def __init__(self, gateway: Gateway, meter_id: str | None) -> None:
        self.gateway = gateway
        self.meter_id = meter_id  # None: the gateway's own view of every group
        self._iids: dict[str, int] = {}

    def group_ids(self) -> list[str]:
        if self.meter_id is None:
            return [g["group_id"] for g in self.gateway.list_groups()]
        return [g["group_id"] for g in _gateway_call(self.gateway.get_meter, self.meter_id)["groups"]]

    def instances(self) -> list[int]:
        gids = self.group_ids()
        for gid in sorted(gids):  # stable ids while this process lives; new groups get new ids
            if gid not in self._iids:
                self._iids[gid] = max(self._iids.values(), default=-1) + 1
        return sorted(self._iids[g] for g in gids)

    def group_of(self, iid: int) -> str:
        for gid, i in self._iids.items():
            if i == iid:
                return gid
        self.instances()
        for gid, i in self._iids.items():
            if i == iid:
                return gid
        raise Lwm2mError("4.04", f"no instance /33001/{iid}")

    def read(self, iid: int) -> dict[int, Any]:
        gid = self.group_of(iid)
        g = _gateway_call(self.gateway.get_group, gid)
        epoch, key_id, members = g["epoch"], g["key_id"], g["epoch_members"]
        session = g["session"] or {}
        if self.meter_id is not None and self.meter_id not in members:
            # the key version this meter holds is the newest epoch it was part of
            epoch, key_id, members = 0, None, members
            for e in self.gateway.list_epochs(gid, limit=50):
                if self.meter_id in e["members"]:
                    epoch, key_id = e["epoch"], e["key_id"]
                    break
        me = next((m for m in g["members"] if m["meter_id"] == self.meter_id), {})
        status, refusal = me.get("status"), me.get("refusal")
        if refusal and refusal["epoch"] >= session.get("epoch", 0):
            state = MembershipState.FAILED  # it refused this negotiation (or the newest one it saw)
        elif session.get("state") in ("round1", "round2", "confirm") and (
            self.meter_id is None or self.meter_id in session.get("members", [])
        ):
            state = MembershipState.NEGOTIATING
        elif status == "lagging" or (session.get("result") or "").startswith("aborted"):
            state = MembershipState.FAILED
        elif epoch:
            state = MembershipState.ESTABLISHED
        else:
            state = MembershipState.IDLE
        result = session.get("result") or ""
        return {
            GroupMembershipRes.GROUP_ID: gid,
            GroupMembershipRes.KEY_VERSION: epoch,
            GroupMembershipRes.KEY_ID: bytes.fromhex(key_id) if key_id else b"",
            GroupMembershipRes.STATE: str(state),
            GroupMembershipRes.MEMBER_COUNT: len(g["epoch_members"]),
            GroupMembershipRes.SUITE: g["suite"],
            GroupMembershipRes.LAST_REKEY_TIME: (g["last_rekey_at"] or 0) // 1000,
            GroupMembershipRes.LAST_NEGOTIATION_DURATION: g["last_negotiation_ms"] or 0,
            GroupMembershipRes.LAST_ERROR: _last_error(result, refusal, g["members"] if self.meter_id is None else []),
            GroupMembershipRes.REKEY_INTERVAL: g["rekey_interval_s"],
        }

    def write(self, iid: int, rid: int, value: Value) -> None:
        if rid != GroupMembershipRes.REKEY_INTERVAL:
            super().write(iid, rid, value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 31_622_400:
            raise Lwm2mError("4.00", "rekey interval must be 0..31622400 seconds")
        _gateway_call(self.gateway.set_rekey_interval, self.group_of(iid), value, actor="lwm2m")

    def execute(self, iid: int, rid: int, args: bytes, actor: str) -> None:
        gid = self.group_of(iid)
        if rid == GroupMembershipRes.REKEY:
            _gateway_call(self.gateway.request_rekey, gid, actor=actor)
        elif rid == GroupMembershipRes.LEAVE:
            if self.meter_id is None:
                raise Lwm2mError("4.05", "the gateway is not a member; execute Leave on a meter's endpoint")
            _gateway_call(self.gateway.remove_member, gid, self.meter_id, actor=actor)
        else:
            super().execute(iid, rid, args, actor)

    def create(self, values: dict[int, Value], actor: str) -> int:
        """Create = join: the new instance's Group ID names the group to add this meter to."""
        gid = values.get(GroupMembershipRes.GROUP_ID)
        if self.meter_id is None or not isinstance(gid, str):
            raise Lwm2mError("4.00", "create needs a Group ID (and a meter endpoint)")
        _gateway_call(self.gateway.add_members, gid, [self.meter_id], actor=actor)
        self.instances()
        return self._iids[gid]

    def delete(self, iid: int, actor: str) -> None:
        """Delete = leave (like executing Leave)."""
        self.execute(iid, GroupMembershipRes.LEAVE, b"", actor)


def _last_error(result: str, refusal: dict | None, members: list[dict]) -> str:
    """Last Error: why the last negotiation aborted, else why a member refused the Start (a meter's
    own refusal on its endpoint; the first refusing member's on the gateway's)."""
    if result.startswith("aborted"):
        text = result.split(":", 1)[1]
    elif refusal:
        text = f"refused: {refusal['detail']}"
    else:
        refusing = next((m for m in members if m.get("refusal")), None)
        text = f"{refusing['meter_id']} refused: {refusing['refusal']['detail']}" if refusing else ""
    return text.encode()[:LAST_ERROR_MAX_BYTES].decode(errors="ignore")


class MeterCredentialProvider(Provider):
    definition = METER_CREDENTIAL

    def __init__(self, gateway: Gateway, meter_id: str) -> None:
        self.gateway = gateway
        self.meter_id = meter_id
        self._cert_cache: tuple[str, bytes, int] | None = None

    def instances(self) -> list[int]:
        return [0]

    def read(self, iid: int) -> dict[int, Any]:
        m = _gateway_call(self.gateway.get_meter, self.meter_id)
        pem = _gateway_call(self.gateway.meter_cert, self.meter_id)
        if self._cert_cache is None or self._cert_cache[0] != pem:
            cert = load_certificate(pem.encode())
            spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            self._cert_cache = (pem, spki, int(cert.not_valid_after_utc.timestamp()))
        _, spki, not_after = self._cert_cache
        return {
            MeterCredentialRes.METER_ID: self.meter_id,
            MeterCredentialRes.PUBLIC_SIGNING_KEY: spki,
            MeterCredentialRes.CERTIFICATE_FINGERPRINT: bytes.fromhex(m["fingerprint"]),
            MeterCredentialRes.CERTIFICATE_NOT_AFTER: not_after,
            MeterCredentialRes.REVOKED: m["status"] == "revoked",
        }

    def execute(self, iid: int, rid: int, args: bytes, actor: str) -> None:
        if rid != MeterCredentialRes.ROTATE_IDENTITY_KEY:
            super().execute(iid, rid, args, actor)
        _gateway_call(self.gateway.request_rotation, self.meter_id, actor=actor)


class PowerMeasurementProvider(Provider):
    """3305 from the latest reading the in-sidecar controller decrypted (absent without one)."""

    definition = POWER_MEASUREMENT

    def __init__(self, meter_id: str, readings: ReadingsSource) -> None:
        self.meter_id = meter_id
        self.readings = readings

    def instances(self) -> list[int]:
        return [0] if self.readings(self.meter_id) else []

    def read(self, iid: int) -> dict[int, Any]:
        r = self.readings(self.meter_id)
        if iid != 0 or not r:
            raise Lwm2mError("4.04", "no reading yet")
        kwh = float(r.get("kWh", 0.0))
        interval_s = float(r.get("interval_s", 60.0)) or 60.0
        return {
            PowerMeasurementRes.TIMESTAMP: int(r.get("ts", 0)) // 1000,
            PowerMeasurementRes.APPLICATION_TYPE: "electricity meter",
            PowerMeasurementRes.INSTANTANEOUS_ACTIVE_POWER: round(kwh * 1000 * 3600 / interval_s, 3),
            PowerMeasurementRes.CUMULATIVE_ACTIVE_POWER: float(r.get("total_Wh", kwh * 1000)),
        }


def fingerprint(values: dict[int, Any]) -> str:
    """A change detector for notifications (values are JSON-able once bytes are hexed)."""
    return hashlib.sha256(
        json.dumps({str(k): v.hex() if isinstance(v, bytes) else v for k, v in values.items()}, sort_keys=True).encode()
    ).hexdigest()
