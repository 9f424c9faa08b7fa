"""The LwM2M object definitions GridKey uses, as plain data (no XML parsing at run time).

Custom objects mirror the OMA DDF files in ``lwm2m-objects/`` field for field (id, name, URN, versions,
instance multiplicity, mandatory flags, and per resource: operations, type, range, units);
``python/tests/test_lwm2m_objects.py`` parses the XML and fails on any difference, so edit both
together. Descriptions live only in the DDF files and ``lwm2m-objects/README.md``: the client needs
the shape of an object, humans need the prose.

Standard objects (Device 3, IPSO Power Measurement 3305) are not redefined: Leshan and every other
LwM2M server ship their DDFs. :data:`STANDARD_OBJECTS` lists only the subset of their resources the
GridKey client implements, with the names and types those bundled DDFs give them (checked against a
running Leshan by ``tests/test_leshan_objects.py``).

Object ids come from the private range 32769-42768, which needs no OMNA registration (URN kind
``x``). Were the objects ever registered, they would get ids in the vendor range and new URNs; this
module is the one place the Python side would change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from .codecs import RType as ResourceType  # one enum of LwM2M data types, shared with the codecs


class Operations(StrEnum):
    """Access a server has to a resource (the DDF ``<Operations>`` element)."""

    NONE = ""
    R = "R"
    W = "W"
    RW = "RW"
    E = "E"

    @property
    def readable(self) -> bool:
        return self in (Operations.R, Operations.RW)

    @property
    def writable(self) -> bool:
        return self in (Operations.W, Operations.RW)

    @property
    def executable(self) -> bool:
        return self is Operations.E


@dataclass(frozen=True)
class ResourceDef:
    """One ``<Item>`` of a DDF file."""

    id: int
    name: str
    operations: Operations
    type: ResourceType
    multiple: bool = False
    mandatory: bool = False
    range: str = ""
    units: str = ""


@dataclass(frozen=True)
class ObjectDef:
    """One ``<Object>`` of a DDF file, with its resources in id order."""

    id: int
    name: str
    urn: str
    object_version: str
    lwm2m_version: str
    multiple: bool
    mandatory: bool
    resources: tuple[ResourceDef, ...]

    def resource(self, resource_id: int) -> ResourceDef:
        """The resource with this id; ``KeyError`` if the object has none (a 4.04 for the client)."""
        for r in self.resources:
            if r.id == resource_id:
                return r
        raise KeyError(f"object {self.id} has no resource {resource_id}")

    @property
    def link(self) -> str:
        """The object's CoRE link for a registration, with ``ver`` when it is not the default 1.0.

        Without ``ver`` a server assumes 1.0 and would pick e.g. the 1.0 model of Power Measurement,
        which lacks the Timestamp resource. The value is unquoted, as Leshan's own client writes it.
        """
        return f"</{self.id}>" if self.object_version == "1.0" else f"</{self.id}>;ver={self.object_version}"


_R, _RW, _E = Operations.R, Operations.RW, Operations.E
_STR, _INT, _OPQ, _TIME, _BOOL, _FLT = (
    ResourceType.STRING,
    ResourceType.INTEGER,
    ResourceType.OPAQUE,
    ResourceType.TIME,
    ResourceType.BOOLEAN,
    ResourceType.FLOAT,
)
_EXEC = ResourceType.NONE

# --- GridKey Group Membership (33001) -------------------------------------------------------------

GROUP_MEMBERSHIP_ID = 33001


class GroupMembershipRes(IntEnum):
    """Resource ids of GridKey Group Membership (33001)."""

    GROUP_ID = 0
    KEY_VERSION = 1
    KEY_ID = 2
    STATE = 3
    MEMBER_COUNT = 4
    SUITE = 5
    LAST_REKEY_TIME = 6
    LAST_NEGOTIATION_DURATION = 7
    LAST_ERROR = 8
    REKEY_INTERVAL = 9
    REKEY = 10
    LEAVE = 11


class MembershipState(StrEnum):
    """Values of resource 33001/x/3 (State)."""

    IDLE = "idle"
    NEGOTIATING = "negotiating"
    ESTABLISHED = "established"
    FAILED = "failed"


_G = GroupMembershipRes
LAST_ERROR_MAX_BYTES = 255  # a string resource, so a long abort or refusal text is cut (UTF-8 safe)
GROUP_MEMBERSHIP = ObjectDef(
    id=GROUP_MEMBERSHIP_ID,
    name="GridKey Group Membership",
    urn="urn:oma:lwm2m:x:33001",
    object_version="1.0",
    lwm2m_version="1.1",
    multiple=True,
    mandatory=False,
    resources=(
        ResourceDef(_G.GROUP_ID, "Group ID", _R, _STR, mandatory=True, range="1..64 bytes"),
        ResourceDef(_G.KEY_VERSION, "Key Version", _R, _INT, mandatory=True, range="0..9223372036854775807"),
        ResourceDef(_G.KEY_ID, "Key ID", _R, _OPQ, mandatory=True, range="0 or 8 bytes"),
        ResourceDef(_G.STATE, "State", _R, _STR, mandatory=True, range="idle, negotiating, established, failed"),
        ResourceDef(_G.MEMBER_COUNT, "Member Count", _R, _INT, mandatory=True, range="0..65535"),
        ResourceDef(_G.SUITE, "Suite", _R, _STR, mandatory=True, range="GK1, GK2"),
        ResourceDef(_G.LAST_REKEY_TIME, "Last Rekey Time", _R, _TIME),
        ResourceDef(
            _G.LAST_NEGOTIATION_DURATION, "Last Negotiation Duration", _R, _INT, range="0..2147483647", units="ms"
        ),
        ResourceDef(_G.LAST_ERROR, "Last Error", _R, _STR, range=f"0..{LAST_ERROR_MAX_BYTES} bytes"),
        ResourceDef(_G.REKEY_INTERVAL, "Rekey Interval", _RW, _INT, range="0..31622400", units="s"),
        ResourceDef(_G.REKEY, "Rekey", _E, _EXEC, mandatory=True),
        ResourceDef(_G.LEAVE, "Leave", _E, _EXEC, mandatory=True),
    ),
)

# --- GridKey Meter Credential (33002) -------------------------------------------------------------

METER_CREDENTIAL_ID = 33002


class MeterCredentialRes(IntEnum):
    """Resource ids of GridKey Meter Credential (33002)."""

    METER_ID = 0
    PUBLIC_SIGNING_KEY = 1
    CERTIFICATE_FINGERPRINT = 2
    CERTIFICATE_NOT_AFTER = 3
    REVOKED = 4
    ROTATE_IDENTITY_KEY = 5


_C = MeterCredentialRes
METER_CREDENTIAL = ObjectDef(
    id=METER_CREDENTIAL_ID,
    name="GridKey Meter Credential",
    urn="urn:oma:lwm2m:x:33002",
    object_version="1.0",
    lwm2m_version="1.1",
    multiple=False,
    mandatory=False,
    resources=(
        ResourceDef(_C.METER_ID, "Meter ID", _R, _STR, mandatory=True, range="1..64 bytes"),
        ResourceDef(_C.PUBLIC_SIGNING_KEY, "Public Signing Key", _R, _OPQ, mandatory=True),
        ResourceDef(_C.CERTIFICATE_FINGERPRINT, "Certificate Fingerprint", _R, _OPQ, mandatory=True, range="32 bytes"),
        ResourceDef(_C.CERTIFICATE_NOT_AFTER, "Certificate Not After", _R, _TIME, mandatory=True),
        ResourceDef(_C.REVOKED, "Revoked", _R, _BOOL, mandatory=True),
        ResourceDef(_C.ROTATE_IDENTITY_KEY, "Rotate Identity Key", _E, _EXEC),
    ),
)

#: The custom objects, by id: exactly the DDF files in ``lwm2m-objects/``.
GRIDKEY_OBJECTS: dict[int, ObjectDef] = {o.id: o for o in (GROUP_MEMBERSHIP, METER_CREDENTIAL)}

# --- standard objects the client implements (subset of their resources) ---------------------------

DEVICE_ID = 3
POWER_MEASUREMENT_ID = 3305


class DeviceRes(IntEnum):
    """Resources of the OMA Device object (3) the GridKey client implements."""

    MANUFACTURER = 0
    MODEL_NUMBER = 1
    SERIAL_NUMBER = 2
    FIRMWARE_VERSION = 3
    REBOOT = 4
    ERROR_CODE = 11
    CURRENT_TIME = 13
    SUPPORTED_BINDING_AND_MODES = 16
    DEVICE_TYPE = 17
    SOFTWARE_VERSION = 19


class PowerMeasurementRes(IntEnum):
    """Resources of IPSO Power Measurement (3305, version 1.1) the GridKey client implements."""

    INSTANTANEOUS_ACTIVE_POWER = 5800
    CUMULATIVE_ACTIVE_POWER = 5805
    APPLICATION_TYPE = 5750
    TIMESTAMP = 5518


_D, _P = DeviceRes, PowerMeasurementRes
DEVICE = ObjectDef(
    id=DEVICE_ID,
    name="Device",
    urn="urn:oma:lwm2m:oma:3:1.1",
    object_version="1.1",
    lwm2m_version="1.1",
    multiple=False,
    mandatory=True,
    resources=(
        ResourceDef(_D.MANUFACTURER, "Manufacturer", _R, _STR),
        ResourceDef(_D.MODEL_NUMBER, "Model Number", _R, _STR),
        ResourceDef(_D.SERIAL_NUMBER, "Serial Number", _R, _STR),
        ResourceDef(_D.FIRMWARE_VERSION, "Firmware Version", _R, _STR),
        ResourceDef(_D.REBOOT, "Reboot", _E, _EXEC, mandatory=True),
        ResourceDef(_D.ERROR_CODE, "Error Code", _R, _INT, multiple=True, mandatory=True, range="0..8"),
        ResourceDef(_D.CURRENT_TIME, "Current Time", _RW, _TIME),
        ResourceDef(_D.SUPPORTED_BINDING_AND_MODES, "Supported Binding and Modes", _R, _STR, mandatory=True),
        ResourceDef(_D.DEVICE_TYPE, "Device Type", _R, _STR),
        ResourceDef(_D.SOFTWARE_VERSION, "Software Version", _R, _STR),
    ),
)
POWER_MEASUREMENT = ObjectDef(
    id=POWER_MEASUREMENT_ID,
    name="Power Measurement",
    urn="urn:oma:lwm2m:ext:3305:1.1",
    object_version="1.1",
    lwm2m_version="1.0",
    multiple=True,
    mandatory=False,
    resources=(
        ResourceDef(_P.TIMESTAMP, "Timestamp", _R, _TIME),
        ResourceDef(_P.APPLICATION_TYPE, "Application Type", _RW, _STR),
        ResourceDef(_P.INSTANTANEOUS_ACTIVE_POWER, "Instantaneous active power", _R, _FLT, mandatory=True, units="W"),
        ResourceDef(_P.CUMULATIVE_ACTIVE_POWER, "Cumulative active power", _R, _FLT, units="Wh"),
    ),
)

#: Standard objects by id, each with only the resources the GridKey client implements.
STANDARD_OBJECTS: dict[int, ObjectDef] = {o.id: o for o in (DEVICE, POWER_MEASUREMENT)}
