/**
 * How a GridKey node reports: its status texts, the config node lookup (a node without a usable
 * sidecar says so at once), and how a failure reaches the flow (node.error with the message, so
 * Catch nodes see it, with the sidecar's problem details on msg).
 */
"use strict";

const NS = "@gridkey/node-red-gridkey/gridkey-sidecar"; // the config node's message catalogue
const MAX_STATUS = 40;

function short(text) {
    const s = String(text || "");
    return s.length > MAX_STATUS ? `${s.slice(0, MAX_STATUS - 1)}…` : s;
}

/** node.status() for the shared event stream's state. */
function streamStatus(RED, state, err) {
    switch (state) {
        case "connected":
            return { fill: "green", shape: "dot", text: RED._(`${NS}:gridkey-sidecar.status.connected`) };
        case "connecting":
            return { fill: "grey", shape: "ring", text: RED._(`${NS}:gridkey-sidecar.status.connecting`) };
        case "reconnecting":
            return {
                fill: "yellow",
                shape: "ring",
                text: short(RED._(`${NS}:gridkey-sidecar.status.reconnecting`) + (err ? `: ${err.message}` : "")),
            };
        default:
            return {};
    }
}

function errorStatus(err) {
    return { fill: "red", shape: "ring", text: short(err && err.message ? err.message : err) };
}

/**
 * The node's gridkey-sidecar config node, or null after saying why (status + log), so that a
 * node without a usable configuration says so instead of failing at its first message.
 */
function sidecarOf(RED, node, config) {
    const sidecar = config.sidecar ? RED.nodes.getNode(config.sidecar) : null;
    if (!sidecar) {
        node.status({ fill: "red", shape: "ring", text: RED._(`${NS}:gridkey-sidecar.errors.no-sidecar`) });
        node.error(RED._(`${NS}:gridkey-sidecar.errors.no-sidecar`));
        return null;
    }
    if (!sidecar.client) {
        node.status(errorStatus(sidecar.configError));
        return null;
    }
    return sidecar;
}

/** Put what a failed request said on the message (for a Catch node) and hand the error to done(). */
function fail(node, msg, err, done) {
    node.status(errorStatus(err));
    if (err && err.status) {
        msg.statusCode = err.status;
    }
    if (err && (err.detail || err.type)) {
        msg.problem = { status: err.status, type: err.type, title: err.title, detail: err.detail };
    }
    if (done) {
        done(err);
    } else {
        node.error(err, msg);
    }
}

module.exports = { NS, short, streamStatus, errorStatus, sidecarOf, fail };
