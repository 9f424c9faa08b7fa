"use strict";

const assert = require("node:assert/strict");
const { mount, withWorld } = require("./support/nodered");
const { World, waitFor } = require("./support/world");

const GROUP = "feeder-c";

describe("gridkey command", function () {
    this.timeout(120000);
    const ctx = withWorld({ meters: 5 }, async (world) => {
        await world.api("POST", "/v1/groups", { group_id: GROUP, members: [...world.ids, "controller"] });
        await world.waitEpoch(GROUP, 1);
    });

    function commandsAt(meterId) {
        const status = JSON.parse(require("node:fs").readFileSync(ctx.world.statusFile, "utf8"));
        return status.meters.find((m) => m.meter_id === meterId).commands;
    }

    it("sends msg.payload as a signed group command that every meter decrypts", async function () {
        const flow = await mount(ctx.world, [{ id: "c", type: "gridkey-command", sidecar: "sc", group: GROUP, wires: [["out"]] }]);
        const command = { shed: 10, until: "18:00", note: "démo" };
        flow.node("c").receive({ payload: command });
        const answer = (await flow.wire("out").next(1)).payload;
        assert.equal(answer.group_id, GROUP);
        assert.equal(answer.epoch, 1);
        assert.equal(answer.key_id, ctx.world.fleetKeys(GROUP)[ctx.world.ids[0]].key_id);
        await waitFor("the command at every meter", () =>
            ctx.world.ids.every((m) => (commandsAt(m) || []).some((c) => JSON.stringify(c.command) === JSON.stringify(command))),
        );
        for (const m of ctx.world.ids) {
            const got = commandsAt(m).find((c) => c.command.shed === 10);
            assert.equal(got.from, "controller");
            assert.equal(got.epoch, 1);
        }
    });

    it("refuses an empty payload and an unknown group, through Catch", async function () {
        const flow = await mount(ctx.world, [{ id: "c", type: "gridkey-command", sidecar: "sc", group: "", wires: [["out"]] }]);
        flow.node("c").receive({ group_id: GROUP });
        assert.match((await flow.caught.next(1)).error.message, /gridkey-command.errors.payload/);
        flow.node("c").receive({ group_id: "nope", payload: { shed: 1 } });
        assert.equal((await flow.caught.next(2)).statusCode, 404);
        flow.node("c").receive({ payload: { shed: 1 } });
        assert.match((await flow.caught.next(3)).error.message, /gridkey-command.errors.group/);
        assert.equal(flow.wire("out").got.length, 0);
    });

    it("says 409 when the sidecar hosts no controller", async function () {
        const bare = await new World({ meters: 0, controller: false }).start();
        try {
            await bare.api("POST", "/v1/groups", { group_id: "g", members: [] });
            const flow = await mount(bare, [{ id: "c", type: "gridkey-command", sidecar: "sc", group: "g", wires: [["out"]] }]);
            flow.node("c").receive({ payload: { shed: 1 } });
            const refused = await flow.caught.next(1);
            assert.equal(refused.statusCode, 409);
            assert.match(refused.problem.detail, /no controller/);
        } finally {
            await bare.stop();
        }
    });
});
