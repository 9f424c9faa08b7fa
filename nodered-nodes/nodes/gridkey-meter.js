/**
 * gridkey meter: list, get, enrol and revoke meters through the sidecar's operator API.
 * The operation comes from the node's setting or, when that is "msg.topic", from msg.topic.
 */
"use strict";

module.exports = function (RED) {
    const { METER_OPERATIONS, REVOCATION_REASONS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { checkId, pick } = require("../lib/inputs");
    const { handleWith } = require("../lib/operation");
    const { sidecarOf, fail } = require("../lib/status");

    function GridKeyMeterNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);

        function requestFor(msg) {
            const op = pick(config.operation === "topic" ? "" : config.operation, msg.topic);
            if (!METER_OPERATIONS.includes(op)) {
                throw new Error(RED._("gridkey-meter.errors.operation", { op, ops: METER_OPERATIONS.join(", ") }));
            }
            const p = msg.payload && typeof msg.payload === "object" ? msg.payload : {};
            if (op === "list") {
                return { op, method: "GET", path: "/v1/meters", opts: { query: { limit: p.limit, after: p.after } } };
            }
            if (op === "enrol") {
                const pem = pick("", typeof msg.payload === "string" ? msg.payload : "", p.cert_pem);
                if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
                    throw new Error(RED._("gridkey-meter.errors.pem"));
                }
                return { op, method: "POST", path: "/v1/meters", opts: { body: { cert_pem: pem } } };
            }
            const meter = checkId(
                RED,
                pick(config.meter, msg.meter_id, typeof msg.payload === "string" ? msg.payload : "", p.meter_id),
                RED._("gridkey-meter.errors.meter"),
            );
            if (op === "get") {
                return { op, meter, method: "GET", path: `/v1/meters/${seg(meter)}`, opts: {} };
            }
            const reason = pick("", msg.reason, p.reason) || config.reason || "keyCompromise";
            if (!REVOCATION_REASONS.includes(reason)) {
                throw new Error(RED._("gridkey-meter.errors.reason", { reason }));
            }
            return { op, meter, method: "POST", path: `/v1/meters/${seg(meter)}/revoke`, opts: { body: { reason } } };
        }

        if (!sidecar) {
            node.on("input", (msg, send, done) => fail(node, msg, new Error(RED._("gridkey-meter.errors.no-sidecar")), done));
            return;
        }
        node.on(
            "input",
            handleWith(node, sidecar, {
                build: requestFor,
                busy: (req) => RED._(`gridkey-meter.status.${req.op}`),
                accept: (req, answer) => (req.op === "list" ? Array.isArray(answer) : Boolean(answer && answer.meter_id)),
                badAnswer: RED._("gridkey-meter.errors.answer"),
                outcome: (req, answer) => ({
                    fill: req.op === "revoke" ? "yellow" : "green",
                    shape: "dot",
                    text:
                        req.op === "list"
                            ? RED._("gridkey-meter.status.listed", { n: answer.length })
                            : `${answer.meter_id}: ${answer.status}`,
                }),
            }),
        );
    }

    RED.nodes.registerType("gridkey-meter", GridKeyMeterNode);
};
