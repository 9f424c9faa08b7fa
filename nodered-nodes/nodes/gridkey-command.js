/**
 * gridkey command: send msg.payload to a group as a command, signed by the sidecar's controller
 * identity and encrypted under the group's current epoch key (POST /v1/groups/{g}/commands).
 * Meters accept it only if the signer's certificate has the controller role, so another member
 * holding the group key cannot forge one. Needs a sidecar started with --controller.
 */
"use strict";

module.exports = function (RED) {
    const { seg } = require("../lib/client");
    const { checkId, pick } = require("../lib/inputs");
    const { handleWith } = require("../lib/operation");
    const { sidecarOf, fail } = require("../lib/status");

    function GridKeyCommandNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);

        if (!sidecar) {
            node.on("input", (msg, send, done) => fail(node, msg, new Error(RED._("gridkey-command.errors.no-sidecar")), done));
            return;
        }
        node.on(
            "input",
            handleWith(node, sidecar, {
                build(msg) {
                    const group = checkId(RED, pick(config.group, msg.group_id), RED._("gridkey-command.errors.group"));
                    if (msg.payload === undefined) {
                        throw new Error(RED._("gridkey-command.errors.payload"));
                    }
                    const body = { command: msg.payload };
                    return { group, method: "POST", path: `/v1/groups/${seg(group)}/commands`, opts: { body } };
                },
                busy: () => RED._("gridkey-command.status.sending"),
                accept: (req, answer) => Boolean(answer && typeof answer === "object" && !Array.isArray(answer)),
                badAnswer: RED._("gridkey-command.errors.answer"),
                outcome: (req, answer) => ({
                    fill: "green",
                    shape: "dot",
                    text: RED._("gridkey-command.status.sent", { group: req.group, epoch: answer.epoch }),
                }),
            }),
        );
    }

    RED.nodes.registerType("gridkey-command", GridKeyCommandNode);
};
