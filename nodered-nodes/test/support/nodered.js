/**
 * node-red-node-test-helper bound to one Node-RED runtime: the package's own devDependency
 * (Node-RED 4.1) unless GRIDKEY_NODE_RED names another install's `node-red` package directory
 * (the suite runs again on Node-RED 5.x under Node 22 that way).
 */
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const helper = require("node-red-node-test-helper");
const { World } = require("./world");

const runtimeDir = process.env.GRIDKEY_NODE_RED
    ? path.resolve(process.env.GRIDKEY_NODE_RED)
    : path.dirname(require.resolve("node-red/package.json"));
helper.init(path.join(runtimeDir, require(path.join(runtimeDir, "package.json")).main || "lib/red.js"));

const NODE_TYPES = [
    "gridkey-sidecar",
    "gridkey-meter",
    "gridkey-group",
    "gridkey-rekey",
    "gridkey-key-events",
    "gridkey-command",
    "gridkey-readings",
];
const nodes = NODE_TYPES.map((t) => require(`../../nodes/${t}.js`));
const coreNodes = path.dirname(require.resolve("@node-red/nodes/package.json", { paths: [runtimeDir] }));
const tlsNode = require(path.join(coreNodes, "core/network/05-tls.js"));
const catchNode = require(path.join(coreNodes, "core/common/25-catch.js"));

function runtimeVersion() {
    return require(path.join(runtimeDir, "package.json")).version;
}

/** A flow with one gridkey-sidecar config node ("sc") plus `flowNodes`, and its credentials. */
function flowWith(world, flowNodes, { token, url, extra = {} } = {}) {
    const flow = [{ id: "sc", type: "gridkey-sidecar", url: url || world.url, timeout: 10, ...extra }, ...flowNodes];
    const credentials = { sc: { token: token === undefined ? world.token() : token } };
    return { flow, credentials };
}

/**
 * Load `flowNodes` with a sidecar config node "sc" and a Catch node for every GridKey node (its
 * messages arrive at collector "caught"). `wire(id)` gives a collector for a helper node id.
 */
async function mount(world, flowNodes, opts = {}) {
    const ids = flowNodes.filter((n) => n.type.startsWith("gridkey-")).map((n) => n.id);
    const all = [
        ...flowNodes,
        { id: "gk-catch", type: "catch", scope: ids, uncaught: false, wires: [["caught"]] },
        { id: "caught", type: "helper" },
    ];
    for (const n of flowNodes) {
        for (const port of n.wires || []) {
            for (const target of port) {
                if (!all.some((x) => x.id === target)) {
                    all.push({ id: target, type: "helper" });
                }
            }
        }
    }
    const { flow, credentials } = flowWith(world, all, opts);
    await helper.load([...nodes, tlsNode, catchNode], flow, credentials);
    const collectors = {};
    const wire = (id) => (collectors[id] = collectors[id] || collector(helper.getNode(id)));
    wire("caught");
    for (const n of all) {
        if (n.type === "helper") {
            wire(n.id);
        }
    }
    return { node: (id) => helper.getNode(id), wire, caught: collectors.caught };
}

/**
 * mocha hooks for a spec file: a World (sidecar + fleet) for the file, `setup(world)` once it runs,
 * a Node-RED test runtime per test, and at the end a check that the sidecar logged no unhandled
 * exception (`known`: patterns an open issue tracks). Returns `ctx`; `ctx.world` is the World.
 */
function withWorld(opts = {}, setup = null, known = []) {
    const ctx = {};
    before(async function () {
        this.timeout(120000);
        ctx.world = await new World(opts).start();
        if (setup) {
            await setup(ctx.world);
        }
    });
    after(async function () {
        if (ctx.world) {
            assert.deepEqual(ctx.world.tracebacks(known), []);
            await ctx.world.stop();
        }
    });
    runtimeHooks();
    return ctx;
}

/** mocha hooks: a Node-RED test runtime per test. */
function runtimeHooks() {
    beforeEach(() => helper.startServer());
    afterEach(async function () {
        await helper.unload();
        await helper.stopServer();
    });
}

/** Collect messages arriving at a helper node; `next(n)` resolves with the n-th (counting from 1). */
function collector(node) {
    const got = [];
    const waiting = [];
    node.on("input", (msg) => {
        got.push(msg);
        for (const w of waiting.splice(0)) {
            w();
        }
    });
    return {
        got,
        next(n = got.length + 1, timeoutMs = 20000) {
            return new Promise((resolve, reject) => {
                const check = () => {
                    if (got.length >= n) {
                        clearTimeout(t);
                        resolve(got[n - 1]);
                        return true;
                    }
                    return false;
                };
                const t = setTimeout(() => reject(new Error(`message ${n} did not arrive within ${timeoutMs} ms (got ${got.length})`)), timeoutMs);
                if (!check()) {
                    const retry = () => {
                        if (!check()) {
                            waiting.push(retry);
                        }
                    };
                    waiting.push(retry);
                }
            });
        },
    };
}

/** The status objects a node reported, in order (node.status is wrapped, not replaced). */
function statuses(node) {
    const seen = [];
    const original = node.status.bind(node);
    node.status = (s) => {
        seen.push(s);
        return original(s);
    };
    return seen;
}

module.exports = {
    helper,
    nodes,
    tlsNode,
    catchNode,
    NODE_TYPES,
    flowWith,
    mount,
    runtimeHooks,
    withWorld,
    collector,
    statuses,
    runtimeVersion,
};
