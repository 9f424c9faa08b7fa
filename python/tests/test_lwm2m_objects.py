"""The DDF files in lwm2m-objects/ are valid for the OMA schema and for Leshan, and objects.py mirrors them.

Leshan only *logs* a DDF file it rejects and goes on without the object, so a broken file would
surface much later as "unknown object" in the web UI. These checks catch, without Java, what Leshan
checks on load: the OMA schema, the ``xsi:noNamespaceSchemaLocation`` attribute (Leshan picks the
schema version from it and refuses files without it), a LWM2MVersion matching that schema, the URN
format and kind, private-range ids, and executable resources without a type.
``tests/test_leshan_objects.py`` then loads the same files into a real Leshan.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from gridkey.transports.lwm2m import objects
from gridkey.transports.lwm2m.objects import ObjectDef, Operations, ResourceDef, ResourceType

ROOT = Path(__file__).resolve().parents[2]
DDF_DIR = ROOT / "lwm2m-objects"
SCHEMA = ROOT / "lwm2m-objects" / "schema" / "LWM2M-v1_1.xsd"  # OMA's schema (BSD-3), kept in the repo
XSI_NO_NS = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"
URN_RE = re.compile(r"urn:oma:lwm2m:(oma|ext|x):(\d+)(?::(\d+\.\d+))?")
DDF_FILES = sorted(DDF_DIR.glob("*.xml"))


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    assert SCHEMA.is_file(), f"OMA schema missing at {SCHEMA}"
    return etree.XMLSchema(etree.parse(str(SCHEMA)))


def _text(el: etree._Element, tag: str) -> str:
    return el.findtext(tag) or ""


def parse_ddf(path: Path) -> ObjectDef:
    """Read one DDF file into the same shape as :mod:`gridkey.transports.lwm2m.objects` (one object per file)."""
    (obj,) = etree.parse(str(path)).getroot().findall("Object")
    resources = tuple(
        ResourceDef(
            id=int(item.get("ID")),
            name=_text(item, "Name"),
            operations=Operations(_text(item, "Operations")),
            type=ResourceType(_text(item, "Type")),
            multiple=_text(item, "MultipleInstances") == "Multiple",
            mandatory=_text(item, "Mandatory") == "Mandatory",
            range=_text(item, "RangeEnumeration"),
            units=_text(item, "Units"),
        )
        for item in obj.find("Resources").findall("Item")
    )
    return ObjectDef(
        id=int(_text(obj, "ObjectID")),
        name=_text(obj, "Name"),
        urn=_text(obj, "ObjectURN"),
        object_version=_text(obj, "ObjectVersion") or "1.0",
        lwm2m_version=_text(obj, "LWM2MVersion") or "1.0",
        multiple=_text(obj, "MultipleInstances") == "Multiple",
        mandatory=_text(obj, "Mandatory") == "Mandatory",
        resources=resources,
    )


def test_there_is_one_file_per_custom_object() -> None:
    assert sorted(p.name for p in DDF_FILES) == [f"{i}.xml" for i in sorted(objects.GRIDKEY_OBJECTS)]


@pytest.mark.parametrize("path", DDF_FILES, ids=lambda p: p.name)
def test_ddf_validates_against_oma_schema(path: Path, schema: etree.XMLSchema) -> None:
    doc = etree.parse(str(path))
    assert schema.validate(doc), f"{path.name}: {schema.error_log}"


@pytest.mark.parametrize("path", DDF_FILES, ids=lambda p: p.name)
def test_ddf_meets_leshans_loading_rules(path: Path) -> None:
    root = etree.parse(str(path)).getroot()
    # Leshan derives the schema version from this attribute and rejects the file without it.
    location = root.get(XSI_NO_NS)
    assert location is not None, "missing xsi:noNamespaceSchemaLocation"
    assert location.endswith("LWM2M-v1_1.xsd"), location
    objs = root.findall("Object")
    assert len(objs) == 1, "one object per file keeps the file name = object id convention"
    obj = objs[0]
    assert obj.get("ObjectType") == "MODefinition"
    # ...and requires LWM2MVersion to agree with that schema.
    assert _text(obj, "LWM2MVersion") == "1.1"

    oid = int(_text(obj, "ObjectID"))
    assert path.stem == str(oid)
    assert 32769 <= oid <= 42768, "private range: usable without OMNA registration"
    m = URN_RE.fullmatch(_text(obj, "ObjectURN"))
    assert m, _text(obj, "ObjectURN")
    kind, urn_id, urn_version = m.groups()
    assert kind == "x" and int(urn_id) == oid
    # The URN carries a version exactly when the object version is not 1.0.
    object_version = _text(obj, "ObjectVersion") or "1.0"
    assert urn_version == (None if object_version == "1.0" else object_version)

    items = obj.find("Resources").findall("Item")
    ids = [int(i.get("ID")) for i in items]
    assert ids == list(range(len(ids))), "resource ids are 0..n-1 in order"
    names = [_text(i, "Name") for i in items]
    assert len(set(names)) == len(names)
    for item in items:
        label = f"{oid}/{item.get('ID')} {_text(item, 'Name')}"
        ops, rtype = _text(item, "Operations"), _text(item, "Type")
        assert ops in ("R", "RW", "E"), label
        if ops == "E":
            assert rtype == "", f"{label}: an executable resource must have an empty <Type>"
            assert _text(item, "RangeEnumeration") == "" and _text(item, "Units") == "", label
        else:
            assert rtype, f"{label}: a non-executable resource needs a type"
        assert _text(item, "MultipleInstances") == "Single", label
        assert _text(item, "Description").strip(), f"{label}: describe what the resource means"
    assert _text(obj, "Description1").strip()


@pytest.mark.parametrize("path", DDF_FILES, ids=lambda p: p.name)
def test_python_table_matches_ddf_exactly(path: Path) -> None:
    from_xml = parse_ddf(path)
    in_python = objects.GRIDKEY_OBJECTS[from_xml.id]
    assert in_python == from_xml


def test_resource_enums_match_the_table() -> None:
    """The IntEnums the client code uses name the same ids, in the same order, as the table."""
    for obj, enum in (
        (objects.GROUP_MEMBERSHIP, objects.GroupMembershipRes),
        (objects.METER_CREDENTIAL, objects.MeterCredentialRes),
        (objects.DEVICE, objects.DeviceRes),
        (objects.POWER_MEASUREMENT, objects.PowerMeasurementRes),
    ):
        assert sorted(int(r.id) for r in obj.resources) == sorted(int(m) for m in enum)
        for r in obj.resources:
            assert enum(r.id).name == re.sub(r"\W+", "_", r.name).strip("_").upper(), r.name


def test_state_values_match_the_range_enumeration() -> None:
    state = objects.GROUP_MEMBERSHIP.resource(objects.GroupMembershipRes.STATE)
    assert [s.strip() for s in state.range.split(",")] == [s.value for s in objects.MembershipState]


def test_links_carry_the_object_version() -> None:
    assert objects.GROUP_MEMBERSHIP.link == "</33001>"
    assert objects.POWER_MEASUREMENT.link == "</3305>;ver=1.1"
    with pytest.raises(KeyError):
        objects.METER_CREDENTIAL.resource(99)
