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
    const { sidecarOf, fail } = require("../lib/status");

    function GridKeyCommandNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);

        node.on("input", async function (msg, send, done) {
            if (!sidecar) {
                fail(node, msg, new Error(RED._("gridkey-command.errors.no-sidecar")), done);
                return;
            }
            let group;
            try {
                group = checkId(RED, pick(config.group, msg.group_id), RED._("gridkey-command.errors.group"));
                if (msg.payload === undefined) {
                    throw new Error(RED._("gridkey-command.errors.payload"));
                }
            } catch (err) {
                fail(node, msg, err, done);
                return;
            }
            node.status({ fill: "blue", shape: "dot", text: RED._("gridkey-command.status.sending") });
            try {
                const answer = await sidecar.request("POST", `/v1/groups/${seg(group)}/commands`, {
                    body: { command: msg.payload },
                });
                if (!answer || typeof answer !== "object") {
                    throw new Error(RED._("gridkey-command.errors.answer"));
                }
                msg.payload = answer;
            } catch (err) {
                fail(node, msg, err, done);
                return;
            }
            node.status({
                fill: "green",
                shape: "dot",
                text: RED._("gridkey-command.status.sent", { group, epoch: msg.payload.epoch }),
            });
            send(msg);
            done();
        });
    }

    RED.nodes.registerType("gridkey-command", GridKeyCommandNode);
};
