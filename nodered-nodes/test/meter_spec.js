"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { REVOCATION_REASONS } = require("../lib/constants");
const { helper, mount, statuses, withWorld } = require("./support/nodered");

describe("gridkey meter", function () {
    this.timeout(90000);
    const ctx = withWorld({ meters: 3, controller: false });

    async function load(meterConfig, opts) {
        const flow = await mount(ctx.world, [{ id: "m", type: "gridkey-meter", sidecar: "sc", wires: [["out"]], ...meterConfig }], opts);
        return { m: flow.node("m"), out: flow.wire("out"), caught: flow.caught };
    }

    it("lists meters, gets one, enrols a certificate and revokes with a reason", async function () {
        const { m, out } = await load({ operation: "topic" });
        const seen = statuses(m);
        m.receive({ topic: "list" });
        const listed = await out.next(1);
        assert.deepEqual(listed.payload.map((x) => x.meter_id).sort(), ctx.world.ids);
        // the helper runtime does not translate: status texts are message keys here
        assert.deepEqual(seen.at(-1), { fill: "green", shape: "dot", text: "gridkey-meter.status.listed" });

        m.receive({ topic: "get", meter_id: ctx.world.ids[0] });
        const got = await out.next(2);
        assert.equal(got.payload.meter_id, ctx.world.ids[0]);
        assert.equal(got.payload.status, "active");

        const pem = ctx.world.issueCert("meter-new");
        m.receive({ topic: "enrol", payload: pem });
        const enrolled = await out.next(3);
        assert.equal(enrolled.payload.meter_id, "meter-new");
        assert.equal(enrolled.payload.status, "active");
        assert.ok((await ctx.world.api("GET", "/v1/meters")).some((x) => x.meter_id === "meter-new"));

        m.receive({ topic: "revoke", payload: { meter_id: "meter-new", reason: "superseded" } });
        const revoked = await out.next(4);
        assert.equal(revoked.payload.status, "revoked");
        assert.equal(revoked.payload.revoke_reason, "superseded");
        assert.deepEqual(seen.at(-1), { fill: "yellow", shape: "dot", text: "meter-new: revoked" });
        assert.equal((await ctx.world.api("GET", "/v1/meters/meter-new")).status, "revoked");
    });

    it("keeps the token as a credential, out of the flow configuration", async function () {
        const token = ctx.world.token(["read"]);
        await load({ operation: "list" }, { token });
        assert.equal(helper.getNode("sc").credentials.token, token);
        const flows = JSON.stringify(helper._redNodes.getFlows());
        assert.ok(flows.includes('"gridkey-sidecar"'));
        assert.equal(flows.includes(token), false);
        assert.equal(/"token"/.test(flows), false);
    });

    it("takes the meter from its own setting over the message", async function () {
        const { m, out } = await load({ operation: "get", meter: ctx.world.ids[1] });
        m.receive({ topic: "revoke", meter_id: ctx.world.ids[2] }); // neither the topic nor the id win
        const got = await out.next(1);
        assert.equal(got.payload.meter_id, ctx.world.ids[1]);
        assert.equal(got.payload.status, "active");
    });

    it("sends refusals to a Catch node with the sidecar's problem details, and changes nothing", async function () {
        const { m, out, caught } = await load({ operation: "topic" });
        const seen = statuses(m);
        m.receive({ topic: "get", meter_id: "no-such-meter", _id: "a" });
        const notFound = await caught.next(1);
        assert.equal(notFound.statusCode, 404);
        assert.equal(notFound.problem.detail, "no meter no-such-meter");
        assert.equal(notFound.error.message, "GridKeyError: 404 Not Found: no meter no-such-meter");
        assert.equal(notFound.error.source.id, "m");
        assert.equal(seen.at(-1).fill, "red");

        m.receive({ topic: "enrol", payload: "not a certificate" });
        assert.match((await caught.next(2)).error.message, /gridkey-meter.errors.pem/);
        m.receive({ topic: "launch" });
        assert.match((await caught.next(3)).error.message, /gridkey-meter.errors.operation/);
        m.receive({ topic: "revoke", meter_id: ctx.world.ids[0], reason: "because" });
        assert.match((await caught.next(4)).error.message, /gridkey-meter.errors.reason/);

        // a certificate the sidecar's CA did not issue: the sidecar refuses it
        const foreign = fs.readFileSync(path.join(__dirname, "fixtures/foreign-cert.pem"), "utf8");
        m.receive({ topic: "enrol", payload: foreign });
        const refused = await caught.next(5);
        assert.ok(refused.statusCode >= 400 && refused.statusCode < 500, refused.error.message);

        assert.equal(out.got.length, 0);
        const meters = await ctx.world.api("GET", "/v1/meters");
        assert.deepEqual(meters.filter((x) => x.status === "active").map((x) => x.meter_id).sort(), ctx.world.ids);
    });

    it("offers the revocation reasons the sidecar accepts, no more and no fewer", async function () {
        const doc = await ctx.world.api("GET", "/openapi.json");
        const served = doc.components.schemas.RevokeRequest.properties.reason.enum;
        assert.deepEqual([...served].sort(), [...REVOCATION_REASONS].sort());
    });

    it("reports a refused token as 401 and a missing scope as 403", async function () {
        let flow = await load({ operation: "list" }, { token: "not-a-token" });
        flow.m.receive({});
        assert.equal((await flow.caught.next(1)).statusCode, 401);
        await helper.unload();

        flow = await load({ operation: "revoke", meter: ctx.world.ids[0] }, { token: ctx.world.token(["read"]) });
        flow.m.receive({});
        const denied = await flow.caught.next(1);
        assert.equal(denied.statusCode, 403);
        assert.match(denied.problem.detail, /meters:write/);
        assert.equal((await ctx.world.api("GET", `/v1/meters/${ctx.world.ids[0]}`)).status, "active");
    });
});
