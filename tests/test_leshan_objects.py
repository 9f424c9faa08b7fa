"""A real Leshan demo server loads every GridKey DDF file, and serves the objects as the DDFs define them.

Leshan validates each file in ``-m lwm2m-objects/`` on start and only *logs* a file it rejects, then
runs without that object, so "Leshan started" proves nothing. Here a throwaway LwM2M 1.1 client (a raw
CoAP registration made with aiocoap, nothing of GridKey's own LwM2M code) registers with every
GridKey object plus the standard objects the GridKey client will implement, and then:

* ``/api/objectspecs/{endpoint}`` must list both GridKey objects with exactly the names, URNs,
  versions, operations, types, ranges, units and descriptions of the DDF files (and of
  ``gridkey.transports.lwm2m.objects``);
* the standard Device (3, v1.1) and IPSO Power Measurement (3305, v1.1) objects must be bundled
  with Leshan with the resources the GridKey client relies on;
* Leshan's log must hold no model-loading error;
* the ``/api/event`` stream must report the registration and the deregistration.

A second Leshan, given deliberately broken copies of the files, shows the failure mode the log check
guards against: the objects silently vanish and only a log line says why.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from leshan_fixtures import MODELS_DIR, LeshanServer
from lxml import etree

from gridkey.transports.lwm2m.objects import GRIDKEY_OBJECTS, STANDARD_OBJECTS, ObjectDef, ResourceType

pytestmark = pytest.mark.timeout(60)

# Leshan's JSON spelling of resource types (its Type enum names, lower-cased).
LESHAN_TYPE = {
    ResourceType.NONE: "none",
    ResourceType.STRING: "string",
    ResourceType.INTEGER: "integer",
    ResourceType.UNSIGNED_INTEGER: "unsigned_integer",
    ResourceType.FLOAT: "float",
    ResourceType.BOOLEAN: "boolean",
    ResourceType.OPAQUE: "opaque",
    ResourceType.TIME: "time",
    ResourceType.OBJLNK: "objlnk",
    ResourceType.CORELNK: "corelink",
}


def registration_links() -> str:
    """What a GridKey meter would register: every object, with ``ver`` where not 1.0, and some instances."""
    links = ['</>;rt="oma.lwm2m"', "</1/0>"]
    for obj in (*STANDARD_OBJECTS.values(), *GRIDKEY_OBJECTS.values()):
        links.append(obj.link)
        links += [f"</{obj.id}/{i}>" for i in range(2 if obj.multiple else 1)]
    return ",".join(links)


async def _coap(msg: aiocoap.Message) -> aiocoap.Message:
    ctx = await aiocoap.Context.create_client_context()
    try:
        return await asyncio.wait_for(ctx.request(msg).response, timeout=10)
    finally:
        await ctx.shutdown()


def register(server: LeshanServer, endpoint: str, links: str) -> str:
    """Register ``endpoint`` (LwM2M 1.1, UDP binding, lifetime 60 s); return its registration path."""
    uri = f"{server.coap_url}/rd?ep={endpoint}&lt=60&lwm2m=1.1&b=U"
    msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=links.encode(), content_format=40)
    resp = asyncio.run(_coap(msg))
    assert resp.code == aiocoap.CREATED, f"registration answered {resp.code}: {resp.payload!r}"
    location = "/".join(resp.opt.location_path)
    assert location.startswith("rd/")
    return location


def deregister(server: LeshanServer, location: str) -> None:
    resp = asyncio.run(_coap(aiocoap.Message(code=aiocoap.DELETE, uri=f"{server.coap_url}/{location}")))
    assert resp.code == aiocoap.DELETED, resp.code


def ddf_descriptions(obj: ObjectDef) -> tuple[str, str, dict[int, str]]:
    """Description1, Description2 and the resource descriptions of a GridKey DDF file, as Leshan reads them."""
    (o,) = etree.parse(str(MODELS_DIR / f"{obj.id}.xml")).getroot().findall("Object")
    items = {int(i.get("ID")): i.findtext("Description") or "" for i in o.find("Resources").findall("Item")}
    return o.findtext("Description1") or "", o.findtext("Description2") or "", items


def check_object(spec: dict[str, Any], obj: ObjectDef, *, exact: bool) -> None:
    """``spec`` (Leshan's JSON model) agrees with ``obj``; ``exact`` also requires no extra resources."""
    assert spec["name"] == obj.name
    assert spec["urn"] == obj.urn
    assert spec["version"] == obj.object_version
    assert spec["lwm2mversion"] == obj.lwm2m_version
    assert spec["instancetype"] == ("multiple" if obj.multiple else "single")
    assert spec["mandatory"] is obj.mandatory
    got = {r["id"]: r for r in spec["resourcedefs"]}
    if exact:
        assert sorted(got) == sorted(r.id for r in obj.resources)
    for r in obj.resources:
        assert r.id in got, f"{obj.id}/{r.id} {r.name} missing from Leshan's model"
        g = got[r.id]
        label = f"{obj.id}/{r.id}"
        assert g["name"] == r.name, label
        assert g["operations"] == (r.operations.value or "NONE"), label
        assert g["type"] == LESHAN_TYPE[r.type], label
        assert g["instancetype"] == ("multiple" if r.multiple else "single"), label
        assert g["mandatory"] is r.mandatory, label
        assert g["units"] == r.units, label
        if exact:
            assert g["range"] == r.range, label


@pytest.fixture(scope="module")
def endpoint(leshan: LeshanServer) -> Any:
    """A registered throwaway client's endpoint name, shared by this module's tests; deregistered afterwards.

    The registration and deregistration are also checked on the ``/api/event`` stream.
    """
    ep = f"gk-ddf-{uuid.uuid4().hex[:8]}"
    with leshan.events(ep) as events:
        location = register(leshan, ep, registration_links())
        reg = events.wait_for("REGISTRATION").json()
        assert reg["endpoint"] == ep and reg["lwM2mVersion"] == "1.1"
        yield ep
        deregister(leshan, location)
        assert events.wait_for("DEREGISTRATION").json()["endpoint"] == ep


def test_leshan_logs_no_model_errors_for_our_files(leshan: LeshanServer) -> None:
    assert leshan.model_load_errors() == []
    suspicious = [
        line
        for line in leshan.log_text().splitlines()
        if (" WARN " in line or " ERROR " in line)
        and (str(MODELS_DIR) in line or any(f"{i}.xml" in line for i in GRIDKEY_OBJECTS))
    ]
    assert suspicious == []
    assert "-m" in leshan.cmd and str(MODELS_DIR.resolve()) in leshan.cmd


def test_objectspecs_list_every_gridkey_object_as_defined(leshan: LeshanServer, endpoint: str) -> None:
    specs = {o["id"]: o for o in leshan.api(f"objectspecs/{endpoint}")}
    for obj in GRIDKEY_OBJECTS.values():
        assert obj.id in specs, f"Leshan has no model for {obj.id} {obj.name}: was its DDF rejected?"
        check_object(specs[obj.id], obj, exact=True)
        d1, d2, items = ddf_descriptions(obj)
        assert specs[obj.id]["description"] == d1
        assert specs[obj.id]["description2"] == d2
        assert {r["id"]: r["description"] for r in specs[obj.id]["resourcedefs"]} == items


def test_standard_objects_for_readings_are_bundled_with_leshan(leshan: LeshanServer, endpoint: str) -> None:
    """Device 3 and Power Measurement 3305 come with Leshan: lwm2m-objects/ must not (and need not) ship them."""
    specs = {o["id"]: o for o in leshan.api(f"objectspecs/{endpoint}")}
    for obj in STANDARD_OBJECTS.values():
        assert obj.id in specs
        check_object(specs[obj.id], obj, exact=False)
        assert not (MODELS_DIR / f"{obj.id}.xml").exists()


def test_registration_is_listed_by_the_clients_api(leshan: LeshanServer, endpoint: str) -> None:
    clients = {c["endpoint"]: c for c in leshan.api("clients")}
    links = {link["url"] for link in clients[endpoint]["objectLinks"]}
    assert {"/33001/0", "/33001/1", "/33002/0", "/3305/0", "/3/0"} <= links


def test_a_broken_ddf_is_only_logged_and_its_object_vanishes(leshan_jar: Path, tmp_path: Path) -> None:
    """Why the log check matters: Leshan starts fine, the objects are just missing."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODELS_DIR / "33001.xml", models)
    shutil.copy(MODELS_DIR / "33002.xml", models)
    xsi = ' xsi:noNamespaceSchemaLocation="http://www.openmobilealliance.org/tech/profiles/LWM2M-v1_1.xsd"'
    gm = (models / "33001.xml").read_text()
    assert xsi in gm
    (models / "33001.xml").write_text(gm.replace(xsi, ""))
    mc = (models / "33002.xml").read_text()
    (models / "33002.xml").write_text(mc.replace("<Type></Type>", "<Type>String</Type>"))

    with LeshanServer(leshan_jar, models=models, workdir=tmp_path / "leshan") as broken:
        errors = broken.model_load_errors()
        assert any("33001.xml" in e for e in errors), broken.log_text()
        assert any("33002.xml" in e for e in errors), broken.log_text()
        log = broken.log_text()
        assert "noNamespaceSchemaLocation" in log
        assert "executable resource MUST NOT have a type" in log
        ep = f"gk-broken-{uuid.uuid4().hex[:8]}"
        location = register(broken, ep, registration_links())
        ids = {o["id"] for o in broken.api(f"objectspecs/{ep}")}
        assert 3 in ids and 3305 in ids
        assert 33001 not in ids and 33002 not in ids
        deregister(broken, location)
