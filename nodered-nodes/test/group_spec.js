"use strict";

const assert = require("node:assert/strict");
const { mount, withWorld } = require("./support/nodered");

describe("gridkey group", function () {
    this.timeout(120000);
    const ctx = withWorld({ meters: 4, controller: false });

    const groupNode = (extra) => ({ id: "g", type: "gridkey-group", sidecar: "sc", wires: [["out"]], ...extra });

    it("creates a group, adds and removes members, sets the interval, lists groups and epochs", async function () {
        const flow = await mount(ctx.world, [groupNode({ operation: "topic", group: "feeder-g" })]);
        const g = flow.node("g");
        const out = flow.wire("out");
        const [a, b, c, d] = ctx.world.ids;

        g.receive({ topic: "create", payload: { members: [a, b, c], mode: "e2e", suite: "GK1" } });
        const created = (await out.next(1)).payload;
        assert.equal(created.group_id, "feeder-g");
        assert.deepEqual(created.members.map((m) => m.meter_id), [a, b, c]);
        const k1 = await ctx.world.waitEpoch("feeder-g", 1, [a, b, c]);

        g.receive({ topic: "add-members", payload: [d] });
        assert.equal((await out.next(2)).payload.members.length, 4);
        const k2 = await ctx.world.waitEpoch("feeder-g", 2, [a, b, c, d]);

        g.receive({ topic: "remove-member", meter_id: b });
        assert.deepEqual((await out.next(3)).payload.members.map((m) => m.meter_id), [a, c, d]);
        await ctx.world.waitEpoch("feeder-g", 3, [a, c, d]);

        g.receive({ topic: "set-interval", payload: 3600 });
        assert.equal((await out.next(4)).payload.rekey_interval_s, 3600);

        g.receive({ topic: "get" });
        const got = (await out.next(5)).payload;
        assert.equal(got.epoch, 3);
        assert.equal(got.key_id, ctx.world.fleetKeys("feeder-g")[a].key_id);

        g.receive({ topic: "epochs", payload: { limit: 10 } });
        const epochs = (await out.next(6)).payload;
        assert.deepEqual(epochs.map((e) => e.epoch), [3, 2, 1]);
        assert.equal(epochs[2].key_id, k1);
        assert.equal(epochs[1].key_id, k2);
        assert.deepEqual(epochs.map((e) => e.trigger.split(",")[0]), ["leave", "join", "create"]);

        g.receive({ topic: "list" });
        assert.ok((await out.next(7)).payload.some((x) => x.group_id === "feeder-g"));
        assert.equal(flow.caught.got.length, 0);
    });

    it("takes the group from msg.group_id and sends the sidecar's refusals to Catch", async function () {
        const flow = await mount(ctx.world, [groupNode({ operation: "topic", group: "" })]);
        const g = flow.node("g");
        g.receive({ topic: "create", group_id: "bad-g", payload: { members: ["no-such-meter"] } });
        const refused = await flow.caught.next(1);
        assert.ok([400, 404, 409].includes(refused.statusCode), refused.error.message);
        assert.ok(refused.problem.detail);
        g.receive({ topic: "get", group_id: "bad-g" });
        assert.equal((await flow.caught.next(2)).statusCode, 404); // the refused create stored nothing
        g.receive({ topic: "set-interval", group_id: "bad-g", payload: -1 });
        assert.match((await flow.caught.next(3)).error.message, /gridkey-group.errors.interval/);
        g.receive({ topic: "add-members", group_id: "bad-g", payload: "meter-001" });
        assert.match((await flow.caught.next(4)).error.message, /gridkey-group.errors.members/);
        g.receive({ topic: "get" });
        assert.match((await flow.caught.next(5)).error.message, /gridkey-group.errors.group/);
        assert.equal(flow.wire("out").got.length, 0);
    });

    it("carries an operator-signed roster statement through, and sends a stale or malformed one to Catch", async function () {
        const flow = await mount(ctx.world, [groupNode({ operation: "set-roster", group: "roster-g" })]);
        const g = flow.node("g");
        const out = flow.wire("out");
        const [a, b, c] = ctx.world.ids;
        await ctx.world.api("POST", "/v1/groups", { group_id: "roster-g", members: [a, b, c] });
        await ctx.world.waitEpoch("roster-g", 1, [a, b, c]);

        const statement = await ctx.world.signRoster("roster-g", 1, [a, b]);
        g.receive({ payload: Buffer.from(statement, "base64") }); // as a file node reads it
        const got = (await out.next(1)).payload;
        assert.equal(got.roster_version, 1);
        assert.deepEqual(got.members.filter((m) => m.status === "active").map((m) => m.meter_id), [a, b]);
        await ctx.world.waitEpoch("roster-g", 2, [a, b]);

        g.receive({ payload: Buffer.from(`${JSON.stringify({ statement })}\n`) }); // the CLI's output, read by a file node: not newer
        const again = await flow.caught.next(1);
        assert.equal(again.statusCode, 409, again.error.message);
        g.receive({ payload: statement }); // the same version again, as base64: not newer
        const stale = await flow.caught.next(2);
        assert.equal(stale.statusCode, 409, stale.error.message);
        g.receive({ payload: { statement: "not base64!" } });
        assert.match((await flow.caught.next(3)).error.message, /gridkey-group.errors.statement/);
        g.receive({ payload: Buffer.from("not a statement") });
        assert.equal((await flow.caught.next(4)).statusCode, 400);
        assert.equal(out.got.length, 1);
        assert.equal((await ctx.world.api("GET", "/v1/groups/roster-g")).roster_version, 1);
    });
});
