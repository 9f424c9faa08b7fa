"use strict";

const assert = require("node:assert/strict");
const { mount, withWorld } = require("./support/nodered");
const { sleep } = require("./support/world");

const GROUP = "feeder-d";

describe("gridkey readings", function () {
    this.timeout(120000);
    const ctx = withWorld({ meters: 3, readingInterval: 0.5 }, async (world) => {
        await world.api("POST", "/v1/groups", { group_id: GROUP, members: [...world.ids, "controller"] });
        await world.api("POST", "/v1/groups", { group_id: "other", members: world.ids.slice(0, 2) });
        await world.waitEpoch(GROUP, 1);
        await world.waitEpoch("other", 1, world.ids.slice(0, 2));
    });

    it("emits the gateway's metadata of each reading of one group, in order, without values", async function () {
        const flow = await mount(ctx.world, [{ id: "rd", type: "gridkey-readings", sidecar: "sc", group: GROUP, wires: [["out"]] }]);
        const out = flow.wire("out");
        await out.next(6);
        for (const m of out.got) {
            assert.equal(m.payload.group_id, GROUP);
            assert.ok(ctx.world.ids.includes(m.payload.sender));
            assert.equal(m.topic, m.payload.sender);
            assert.equal(m.payload.epoch, 1);
            assert.equal(m.payload.key_id, ctx.world.fleetKeys(GROUP)[ctx.world.ids[0]].key_id);
            assert.ok(Number.isInteger(m.payload.seq) && Number.isInteger(m.payload.msg_id));
            assert.equal("value" in m.payload, false);
        }
        const ids = out.got.map((m) => m.payload.msg_id);
        assert.deepEqual([...ids].sort((a, b) => a - b), ids);
    });

    it("adds the value the sidecar's controller decrypted", async function () {
        const flow = await mount(ctx.world, [
            { id: "rd", type: "gridkey-readings", sidecar: "sc", group: GROUP, values: true, wires: [["out"]] },
        ]);
        const out = flow.wire("out");
        await out.next(6);
        await sleep(300);
        for (const m of out.got) {
            assert.equal(m.payload.value_status, "decrypted", JSON.stringify(m.payload));
            assert.equal(m.payload.value.meter, m.payload.sender); // the fleet's readings name their meter
            assert.equal(typeof m.payload.value.kWh, "number");
        }
        const ids = out.got.map((m) => m.event_id);
        assert.deepEqual([...ids].sort((a, b) => a - b), ids, "in arrival order");
    });

    it("for every group: a group without the controller has metadata but no value", async function () {
        const flow = await mount(ctx.world, [{ id: "rd", type: "gridkey-readings", sidecar: "sc", values: true, wires: [["out"]] }]);
        const out = flow.wire("out");
        await out.next(12);
        const other = out.got.filter((m) => m.payload.group_id === "other");
        assert.ok(other.length > 0 && out.got.some((m) => m.payload.group_id === GROUP));
        for (const m of other) {
            assert.equal(m.payload.value_status, "not-delivered");
            assert.equal("value" in m.payload, false);
        }
    });

    it("reports a token without readings:read through Catch", async function () {
        const flow = await mount(
            ctx.world,
            [{ id: "rd", type: "gridkey-readings", sidecar: "sc", group: GROUP, values: true, wires: [["out"]] }],
            { token: ctx.world.token(["read"]) },
        );
        const refused = await flow.caught.next(1);
        assert.equal(refused.statusCode, 403);
        assert.match(refused.problem.detail, /readings:read/);
        assert.equal(refused.payload.group_id, GROUP); // the metadata travels with the error
    });
});
