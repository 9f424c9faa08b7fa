/**
 * gridkey readings: one message per reading a meter sends to a group, as the gateway relays it.
 *
 * The payload is the public metadata the gateway sees (sender, epoch, key id, sequence number);
 * the reading itself is encrypted under the group key, which the gateway does not hold. With
 * "decrypted values" on, the node asks the sidecar for what its controller decrypted
 * (GET /v1/groups/{g}/readings/{id}); that needs a sidecar started with --controller, which
 * makes the sidecar process a key holder, and a token with the readings:read scope.
 * Messages leave in the order the readings arrived.
 */
"use strict";

module.exports = function (RED) {
    const { DEFAULTS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { sidecarOf, streamStatus, short } = require("../lib/status");

    function GridKeyReadingsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);
        const group = (config.group || "").trim();
        const values = config.values === true || config.values === "true";
        let count = 0;
        let closed = false;
        let queue = Promise.resolve(); // keeps the output in arrival order while values are fetched

        if (!sidecar) {
            return;
        }

        async function emit(ev) {
            const d = ev.data || {};
            const payload = {
                group_id: d.group_id,
                sender: d.sender,
                epoch: d.epoch,
                key_id: d.key_id,
                seq: d.seq,
                msg_id: d.msg_id,
                size: d.size,
                ts: d.ts,
            };
            const msg = { topic: d.sender, event_id: ev.id, payload };
            if (values) {
                try {
                    const r = await sidecar.request("GET", `/v1/groups/${seg(d.group_id)}/readings/${seg(d.msg_id)}`, {
                        query: { wait: DEFAULTS.readingWaitS },
                    });
                    payload.value_status = r.value_status;
                    if (r.value !== undefined) {
                        payload.value = r.value;
                    }
                } catch (err) {
                    node.status({ fill: "red", shape: "ring", text: short(err.message) });
                    node.error(err, msg);
                    return;
                }
            }
            if (closed) {
                return;
            }
            count += 1;
            node.status({
                fill: "green",
                shape: "dot",
                text: short(RED._("gridkey-readings.status.count", { n: count, sender: d.sender })),
            });
            node.send(msg);
        }

        const unsubscribe = sidecar.subscribe({
            event(ev) {
                if (ev.kind !== "data.reading" || (group && (ev.data || {}).group_id !== group)) {
                    return;
                }
                queue = queue.then(() => emit(ev));
            },
            state(state, err) {
                node.status(streamStatus(RED, state, err));
            },
        });

        node.on("close", function (done) {
            closed = true; // a value still being fetched is dropped, not sent after close
            unsubscribe();
            done();
        });
    }

    RED.nodes.registerType("gridkey-readings", GridKeyReadingsNode);
};
