/**
 * gridkey key events: the sidecar's key and membership events (epoch.committed, member.added,
 * meter.revoked, session.aborted, ...) as messages, for one group or all, from the shared event
 * stream. Events missed while the stream was down are replayed when it comes back, in order and
 * once each. The status shows the group's current key version (epoch and public key id).
 */
"use strict";

module.exports = function (RED) {
    const { ID_RE, KEY_EVENT_KINDS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { sidecarOf, streamStatus, errorStatus } = require("../lib/status");

    function GridKeyKeyEventsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);
        const group = (config.group || "").trim();
        const kinds = new Set((Array.isArray(config.kinds) ? config.kinds : []).filter((k) => KEY_EVENT_KINDS.includes(k)));
        let current = null; // {epoch, key_id} of the group, for the status

        function showKey() {
            if (current && current.epoch) {
                node.status({
                    fill: "green",
                    shape: "dot",
                    text: RED._("gridkey-key-events.status.key", { epoch: current.epoch, key: current.key_id }),
                });
            } else {
                node.status({ fill: "green", shape: "dot", text: RED._("gridkey-key-events.status.no-key") });
            }
        }

        async function loadGroup() {
            try {
                const g = await sidecar.request("GET", `/v1/groups/${seg(group)}`);
                if (!current || g.epoch > current.epoch) {
                    current = { epoch: g.epoch, key_id: g.key_id };
                }
                showKey();
            } catch (err) {
                node.status(errorStatus(err));
                if (err.status !== 404) {
                    node.warn(err.message);
                }
            }
        }

        if (!sidecar) {
            return;
        }
        if (group && !ID_RE.test(group)) {
            node.status({ fill: "red", shape: "ring", text: RED._("gridkey-key-events.errors.group") });
            return;
        }
        if (kinds.size === 0) {
            node.status({ fill: "red", shape: "ring", text: RED._("gridkey-key-events.errors.kinds") });
            node.warn(RED._("gridkey-key-events.errors.kinds"));
        }
        const unsubscribe = sidecar.subscribe({
            event(ev) {
                const d = ev.data || {};
                if (group && d.group_id !== group) {
                    return;
                }
                if (group && ev.kind === "epoch.committed" && (!current || d.epoch > current.epoch)) {
                    current = { epoch: d.epoch, key_id: d.key_id };
                    showKey();
                }
                if (kinds.has(ev.kind)) {
                    node.send({ topic: ev.kind, event_id: ev.id, payload: d });
                }
            },
            state(state, err) {
                if (state === "connected" && group) {
                    loadGroup(); // (re)connected: show the group's key version as it is now
                } else {
                    node.status(streamStatus(RED, state, err));
                }
            },
        });

        node.on("close", function (done) {
            unsubscribe();
            done();
        });
    }

    RED.nodes.registerType("gridkey-key-events", GridKeyKeyEventsNode);
};
