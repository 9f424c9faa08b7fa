/**
 * node-red-node-test-helper bound to one Node-RED runtime: the package's own devDependency
 * (Node-RED 4.1) unless GRIDKEY_NODE_RED names another install's `node-red` package directory
 * (the suite runs again on Node-RED 5.x under Node 22 that way).
 */
"use strict";

const path = require("node:path");
const helper = require("node-red-node-test-helper");

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
const tlsNode = require(path.join(
    path.dirname(require.resolve("@node-red/nodes/package.json", { paths: [runtimeDir] })),
    "core/network/05-tls.js",
));

function runtimeVersion() {
    return require(path.join(runtimeDir, "package.json")).version;
}

/** A flow with one gridkey-sidecar config node ("sc") plus `flowNodes`, and its credentials. */
function flowWith(world, flowNodes, { token, url, extra = {} } = {}) {
    const flow = [{ id: "sc", type: "gridkey-sidecar", url: url || world.url, timeout: 10, ...extra }, ...flowNodes];
    const credentials = { sc: { token: token === undefined ? world.token() : token } };
    return { flow, credentials };
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

module.exports = { helper, nodes, tlsNode, NODE_TYPES, flowWith, collector, statuses, runtimeVersion };
