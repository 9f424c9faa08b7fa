/**
 * gridkey group: create, get and list groups, add and remove members, set the periodic rekey
 * interval, carry an operator-signed roster statement (strict roster profile) and list committed
 * epochs. Every membership change makes the sidecar start a new
 * epoch (fresh keys without the leaver, or with the newcomer); this node answers at once with the
 * group as the sidecar sees it. Use gridkey rekey or gridkey key events to wait for the epoch.
 */
"use strict";

module.exports = function (RED) {
    const { GROUP_OPERATIONS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { checkId, pick } = require("../lib/inputs");
    const { handleWith } = require("../lib/operation");
    const { sidecarOf, fail } = require("../lib/status");

    const CREATE_FIELDS = ["members", "suite", "mode", "rekey_interval_s"];
    const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

    /**
     * The statement as base64, from what a flow has at hand: the JSON `gridkey roster sign` prints
     * (a string, or a Buffer from a file node), `{statement}`, the bare base64, or the raw COSE bytes.
     */
    function statementOf(msg, p) {
        let s = msg.payload;
        if (Buffer.isBuffer(s) && s.length > 0 && s[0] !== 0x7b) {
            return s.toString("base64"); // raw COSE_Sign1 bytes (a CBOR tag, never "{")
        }
        if (Buffer.isBuffer(s)) {
            s = s.toString("utf8");
        }
        if (typeof s === "string" && s.trim().startsWith("{")) {
            try {
                s = JSON.parse(s);
            } catch (_) {
                throw new Error(RED._("gridkey-group.errors.statement"));
            }
        }
        if (s && typeof s === "object" && !Array.isArray(s)) {
            s = s.statement;
        } else if (s === undefined) {
            s = p.statement;
        }
        if (typeof s === "string" && s.trim().length % 4 === 0 && BASE64_RE.test(s.trim())) {
            return s.trim();
        }
        throw new Error(RED._("gridkey-group.errors.statement"));
    }

    function GridKeyGroupNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);

        function requestFor(msg) {
            const op = pick(config.operation === "topic" ? "" : config.operation, msg.topic);
            if (!GROUP_OPERATIONS.includes(op)) {
                throw new Error(RED._("gridkey-group.errors.operation", { op, ops: GROUP_OPERATIONS.join(", ") }));
            }
            if (op === "list") {
                return { op, method: "GET", path: "/v1/groups", opts: {} };
            }
            const p = msg.payload && typeof msg.payload === "object" && !Array.isArray(msg.payload) ? msg.payload : {};
            const group = checkId(RED, pick(config.group, msg.group_id, p.group_id), RED._("gridkey-group.errors.group"));
            const base = `/v1/groups/${seg(group)}`;
            switch (op) {
                case "create": {
                    const body = { group_id: group };
                    for (const k of CREATE_FIELDS) {
                        if (p[k] !== undefined) {
                            body[k] = p[k];
                        }
                    }
                    if (Array.isArray(msg.payload)) {
                        body.members = msg.payload;
                    }
                    if (!Array.isArray(body.members)) {
                        throw new Error(RED._("gridkey-group.errors.members"));
                    }
                    return { op, group, method: "POST", path: "/v1/groups", opts: { body } };
                }
                case "get":
                    return { op, group, method: "GET", path: base, opts: {} };
                case "add-members": {
                    const members = Array.isArray(msg.payload) ? msg.payload : p.members;
                    if (!Array.isArray(members) || members.length === 0) {
                        throw new Error(RED._("gridkey-group.errors.members"));
                    }
                    return { op, group, method: "POST", path: `${base}/members`, opts: { body: { members } } };
                }
                case "remove-member": {
                    const meter = checkId(
                        RED,
                        pick("", msg.meter_id, typeof msg.payload === "string" ? msg.payload : "", p.meter_id),
                        RED._("gridkey-group.errors.meter"),
                    );
                    return { op, group, method: "DELETE", path: `${base}/members/${seg(meter)}`, opts: {} };
                }
                case "set-interval": {
                    const s = typeof msg.payload === "number" ? msg.payload : p.rekey_interval_s;
                    if (!Number.isInteger(s) || s < 0) {
                        throw new Error(RED._("gridkey-group.errors.interval"));
                    }
                    return { op, group, method: "PATCH", path: base, opts: { body: { rekey_interval_s: s } } };
                }
                case "set-roster":
                    return { op, group, method: "PUT", path: `${base}/roster`, opts: { body: { statement: statementOf(msg, p) } } };
                default: // epochs
                    return { op, group, method: "GET", path: `${base}/epochs`, opts: { query: { limit: p.limit } } };
            }
        }

        if (!sidecar) {
            node.on("input", (msg, send, done) => fail(node, msg, new Error(RED._("gridkey-group.errors.no-sidecar")), done));
            return;
        }
        node.on(
            "input",
            handleWith(node, sidecar, {
                build: requestFor,
                busy: (req) => RED._(`gridkey-group.status.${req.op}`),
                accept: (req, answer) =>
                    req.op === "list" || req.op === "epochs"
                        ? Array.isArray(answer)
                        : Boolean(answer && answer.group_id && Array.isArray(answer.members)),
                badAnswer: RED._("gridkey-group.errors.answer"),
                outcome: (req, g) => {
                    let text;
                    if (req.op === "list") {
                        text = RED._("gridkey-group.status.listed", { n: g.length });
                    } else if (req.op === "epochs") {
                        text = RED._("gridkey-group.status.epochs-done", { n: g.length, group: req.group });
                    } else {
                        text = RED._("gridkey-group.status.group", { group: g.group_id, epoch: g.epoch, n: g.members.length });
                    }
                    return { fill: "green", shape: "dot", text };
                },
            }),
        );
    }

    RED.nodes.registerType("gridkey-group", GridKeyGroupNode);
};
