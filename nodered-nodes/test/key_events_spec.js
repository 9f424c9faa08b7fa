"use strict";

const assert = require("node:assert/strict");
const { mount, statuses, withWorld } = require("./support/nodered");
const { Blip } = require("./support/proxy");
const { waitFor, sleep } = require("./support/world");

const GROUP = "feeder-e";

describe("gridkey key events", function () {
    this.timeout(180000);
    const ctx = withWorld({ meters: 4, controller: false }, async (world) => {
        await world.api("POST", "/v1/groups", { group_id: GROUP, members: world.ids });
        await world.waitEpoch(GROUP, 1);
    });

    it("emits the chosen kinds of one group, and shows its key version", async function () {
        const flow = await mount(ctx.world, [
            {
                id: "ev",
                type: "gridkey-key-events",
                sidecar: "sc",
                group: GROUP,
                kinds: ["member.removed", "epoch.committed"],
                wires: [["out"]],
            },
        ]);
        const ev = flow.node("ev");
        const seen = statuses(ev);
        await waitFor("the key version in the status", () => seen.some((s) => s.text === "gridkey-key-events.status.key"));
        const out = flow.wire("out");
        await ctx.world.api("POST", "/v1/groups", { group_id: "elsewhere", members: ctx.world.ids.slice(0, 2) });
        const leaver = ctx.world.ids[3];
        await ctx.world.api("DELETE", `/v1/groups/${GROUP}/members/${leaver}`);
        const removed = await out.next(1);
        assert.equal(removed.topic, "member.removed");
        assert.equal(removed.payload.meter_id, leaver);
        const committed = await out.next(2);
        assert.equal(committed.topic, "epoch.committed");
        assert.equal(committed.payload.group_id, GROUP);
        assert.equal(committed.payload.epoch, 2);
        assert.equal(committed.payload.key_id, await ctx.world.waitEpoch(GROUP, 2, ctx.world.ids.slice(0, 3)));
        assert.ok(committed.event_id > removed.event_id);
        await sleep(500);
        // nothing else: not the other group's epoch, not the session events of this one
        assert.deepEqual(out.got.map((m) => [m.topic, m.payload.group_id]), [
            ["member.removed", GROUP],
            ["epoch.committed", GROUP],
        ]);
        assert.equal(seen.at(-1).text, "gridkey-key-events.status.key");
        await ctx.world.api("POST", `/v1/groups/${GROUP}/members`, { members: [leaver] });
        await ctx.world.waitEpoch(GROUP, 3);
    });

    async function groupsCreated(out, names) {
        await waitFor(`group.created for ${names.join(", ")}`, () => {
            const got = out.got.map((m) => m.payload.group_id);
            return names.every((n) => got.includes(n));
        }, 30000);
        return out.got;
    }

    function assertOnceInOrder(got, names) {
        const ids = got.map((m) => m.event_id);
        assert.deepEqual(got.map((m) => m.payload.group_id), names, "each event once, in order");
        assert.deepEqual([...ids].sort((a, b) => a - b), ids);
        assert.equal(new Set(ids).size, ids.length);
    }

    it("loses nothing and repeats nothing across a network blip", async function () {
        const blip = await new Blip(ctx.world.httpPort).listen();
        try {
            const flow = await mount(
                ctx.world,
                [{ id: "ev", type: "gridkey-key-events", sidecar: "sc", kinds: ["group.created"], wires: [["out"]] }],
                { url: blip.url },
            );
            const sc = flow.node("sc");
            await sc.stream.whenConnected(10000);
            const out = flow.wire("out");
            await ctx.world.api("POST", "/v1/groups", { group_id: "blip-a", members: [] });
            await groupsCreated(out, ["blip-a"]);

            blip.cut(); // the stream drops, and reconnects are refused for a while
            await waitFor("the node to notice", () => sc.stream.state === "reconnecting");
            for (const g of ["blip-b", "blip-c", "blip-d"]) {
                await ctx.world.api("POST", "/v1/groups", { group_id: g, members: [] }); // straight to the sidecar
            }
            await sleep(1500);
            assert.equal(out.got.length, 1, "nothing can arrive while the link is down");
            blip.restore();
            await ctx.world.api("POST", "/v1/groups", { group_id: "blip-e", members: [] });
            const got = await groupsCreated(out, ["blip-b", "blip-c", "blip-d", "blip-e"]);
            await sleep(500);
            assertOnceInOrder(got, ["blip-a", "blip-b", "blip-c", "blip-d", "blip-e"]);
            assert.ok(sc.stream.connects >= 2 && blip.accepted >= 2);
        } finally {
            await blip.close();
        }
    });

    it("loses nothing and repeats nothing across a sidecar restart (kill -9)", async function () {
        const flow = await mount(ctx.world, [
            { id: "ev", type: "gridkey-key-events", sidecar: "sc", kinds: ["group.created", "epoch.committed"], wires: [["out"]] },
        ]);
        const sc = flow.node("sc");
        await sc.stream.whenConnected(10000);
        const out = flow.wire("out");
        await ctx.world.api("POST", "/v1/groups", { group_id: "restart-a", members: [] });
        await groupsCreated(out, ["restart-a"]);
        const connectsBefore = sc.stream.connects;

        await ctx.world.restartSidecar();
        // the node is backing off; these land before it is back, and come from the sidecar's store
        for (const g of ["restart-b", "restart-c"]) {
            await ctx.world.api("POST", "/v1/groups", { group_id: g, members: [] });
        }
        await ctx.world.api("POST", `/v1/groups/${GROUP}/rekey`);
        await waitFor("the stream to reconnect", () => sc.stream.connects > connectsBefore, 30000);
        await ctx.world.api("POST", "/v1/groups", { group_id: "restart-d", members: [] });
        const got = await groupsCreated(out, ["restart-b", "restart-c", "restart-d"]);
        await waitFor("the rekey's commit", () => got.some((m) => m.topic === "epoch.committed"), 30000);
        await sleep(500);
        const created = got.filter((m) => m.topic === "group.created");
        assertOnceInOrder(created, ["restart-a", "restart-b", "restart-c", "restart-d"]);
        const all = got.map((m) => m.event_id);
        assert.equal(new Set(all).size, all.length);
        const commits = got.filter((m) => m.topic === "epoch.committed");
        assert.equal(commits.length, 1);
        assert.equal(commits[0].payload.key_id, await ctx.world.waitEpoch(GROUP, commits[0].payload.epoch));
        // and what arrived is exactly what the sidecar recorded after the first event
        const h = { "last-event-id": String(created[0].event_id) };
        const replay = await readStream(ctx.world, h);
        const expected = replay.filter((e) => ["group.created", "epoch.committed"].includes(e.kind)).map((e) => e.id);
        assert.deepEqual(all.slice(1), expected);
    });
});

/** The sidecar's own replay of events after Last-Event-ID (read until it goes quiet). */
function readStream(world, headers) {
    return new Promise((resolve, reject) => {
        const events = [];
        let timer;
        const req = world.client.open("GET", "/v1/events", { headers: { accept: "text/event-stream", ...headers }, timeoutMs: 0 }, (res) => {
            const { Parser } = require("../lib/events");
            const parser = new Parser((b) => b.data && events.push({ id: Number(b.id), kind: b.type }));
            res.setEncoding("utf8");
            const quiet = () => {
                clearTimeout(timer);
                timer = setTimeout(() => {
                    req.destroy();
                    resolve(events);
                }, 700);
            };
            quiet();
            res.on("data", (c) => {
                parser.push(c);
                quiet();
            });
        }, reject);
    });
}
