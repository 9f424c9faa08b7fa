"use strict";

const assert = require("node:assert/strict");
const { mount, runtimeHooks, statuses } = require("./support/nodered");
const { World, waitFor } = require("./support/world");

const GROUP = "feeder-r";

describe("gridkey rekey", function () {
    this.timeout(120000);
    let world;

    before(async function () {
        world = await new World({ meters: 10 }).start();
        await world.api("POST", "/v1/groups", { group_id: GROUP, members: [...world.ids, "controller"] });
        await world.waitEpoch(GROUP, 1);
    });
    after(async function () {
        if (world) {
            assert.deepEqual(world.tracebacks(), []);
            await world.stop();
        }
    });
    runtimeHooks();

    const rekeyNode = (extra = {}) => ({
        id: "r",
        type: "gridkey-rekey",
        sidecar: "sc",
        group: GROUP,
        wait: 30,
        wires: [["ok"], ["failed"]],
        ...extra,
    });

    it("outputs once the new epoch is committed, with the key id every meter holds", async function () {
        const flow = await mount(world, [rekeyNode()]);
        const seen = statuses(flow.node("r"));
        const before = (await world.api("GET", `/v1/groups/${GROUP}`)).epoch;
        flow.node("r").receive({ payload: "tamper alarm", topic: "meter-004/tamper" });
        const out = await flow.wire("ok").next(1);
        const p = out.payload;
        assert.equal(out.topic, "meter-004/tamper"); // the message goes on: the rest of the flow keeps its context
        assert.equal(p.group_id, GROUP);
        assert.equal(p.target_epoch, before + 1);
        assert.equal(p.epoch, before + 1);
        assert.match(p.key_id, /^[0-9a-f]{16}$/);
        assert.deepEqual([...p.members].sort(), [...world.ids, "controller"].sort());
        assert.equal(p.trigger, "manual");
        assert.ok(Number.isInteger(p.duration_ms) && p.duration_ms >= 0);
        assert.ok(p.elapsed_ms >= 0);
        // every meter holds exactly that key id for that epoch, and so does the sidecar's record
        assert.equal(await world.waitEpoch(GROUP, p.epoch), p.key_id);
        const epochs = await world.api("GET", `/v1/groups/${GROUP}/epochs?limit=1`);
        assert.equal(epochs[0].key_id, p.key_id);
        assert.equal(flow.wire("failed").got.length, 0);
        assert.ok(seen.some((s) => s.fill === "yellow" && s.text === "gridkey-rekey.status.waiting"));
        assert.deepEqual(seen.at(-1), { fill: "green", shape: "dot", text: "gridkey-rekey.status.committed" });
    });

    it("a rekey requested while a negotiation runs waits for the epoch after it", async function () {
        const flow = await mount(world, [rekeyNode()]);
        const r = flow.node("r");
        const before = (await world.api("GET", `/v1/groups/${GROUP}`)).epoch;
        r.receive({ _n: 1 });
        r.receive({ _n: 2 }); // lands while the first one's negotiation is under way
        const first = await flow.wire("ok").next(1);
        const second = await flow.wire("ok").next(2);
        const byN = Object.fromEntries([first, second].map((m) => [m._n, m.payload]));
        assert.equal(byN[1].epoch, before + 1);
        assert.ok(byN[2].target_epoch >= before + 2, JSON.stringify(byN[2]));
        assert.ok(byN[2].epoch >= byN[2].target_epoch);
        assert.notEqual(byN[1].key_id, byN[2].key_id);
        assert.equal(await world.waitEpoch(GROUP, byN[2].epoch), byN[2].key_id);
    });

    it("takes the group from msg.group_id and sends an unknown group to Catch", async function () {
        const flow = await mount(world, [rekeyNode({ group: "" })]);
        flow.node("r").receive({ group_id: "no-such-group" });
        const caught = await flow.caught.next(1);
        assert.equal(caught.statusCode, 404);
        flow.node("r").receive({ group_id: GROUP });
        const out = await flow.wire("ok").next(1);
        assert.equal(out.payload.group_id, GROUP);
        assert.equal(flow.wire("failed").got.length, 0);
    });

    it("ends on the second output when the group cannot negotiate (idle) or nothing commits in time", async function () {
        // one active member: the sidecar cannot start a negotiation
        await world.api("POST", "/v1/groups", { group_id: "solo", members: [world.ids[0]] });
        // two enrolled meters that are not running: the negotiation waits for them until the wait ends
        const offline = ["offline-1", "offline-2"];
        for (const id of offline) {
            await world.api("POST", "/v1/meters", { cert_pem: world.issueCert(id) });
        }
        await world.api("POST", "/v1/groups", { group_id: "dark", members: offline });
        const flow = await mount(world, [
            rekeyNode({ id: "r-solo", group: "solo", wires: [["ok"], ["failed"]] }),
            rekeyNode({ id: "r-dark", group: "dark", wait: 2, wires: [["ok"], ["failed"]] }),
        ]);
        flow.node("r-solo").receive({});
        const idle = await flow.wire("failed").next(1);
        assert.equal(idle.payload.reason, "idle");
        assert.equal(idle.payload.group_id, "solo");
        assert.match(idle.payload.detail, /fewer than two/);

        const t0 = Date.now();
        flow.node("r-dark").receive({});
        const late = await flow.wire("failed").next(2);
        assert.equal(late.payload.reason, "timeout");
        assert.equal(late.payload.group_id, "dark");
        assert.ok(Date.now() - t0 >= 1900, `gave up after ${Date.now() - t0} ms`);
        assert.equal(flow.wire("ok").got.length, 0);
    });

    it("survives a redeploy mid-wait without an output after close", async function () {
        let flow = await mount(world, [rekeyNode()]);
        flow.node("r").receive({});
        const ok = flow.wire("ok");
        await require("./support/nodered").helper.unload();
        await waitFor("the rekey to commit anyway", async () => {
            const g = await world.api("GET", `/v1/groups/${GROUP}`);
            return g.session && g.session.state === "committed";
        });
        assert.equal(ok.got.length, 0);
        flow = await mount(world, [rekeyNode()]); // and a new instance works as before
        flow.node("r").receive({});
        assert.equal((await flow.wire("ok").next(1)).payload.group_id, GROUP);
    });
});
