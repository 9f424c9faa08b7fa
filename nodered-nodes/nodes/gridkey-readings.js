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
    const { DEFAULTS, ID_RE } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { sidecarOf, streamStatus, short, fail } = require("../lib/status");
    const { Slots } = require("../lib/slots");

    const MAX_FETCHES = 4; // value requests in flight per node: each may wait on the sidecar
    const MAX_BACKLOG = 256; // readings waiting for a value; past this they go on without one

    function GridKeyReadingsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);
        const group = (config.group || "").trim();
        const values = config.values === true || config.values === "true";
        let count = 0;
        let closed = false;
        let backlog = 0; // readings whose value is being fetched or waits for a slot
        let warned = false;
        let queue = Promise.resolve(); // emits in arrival order while values are fetched side by side

        if (!sidecar) {
            return;
        }
        if (group && !ID_RE.test(group)) {
            node.status({ fill: "red", shape: "ring", text: RED._("gridkey-readings.errors.group") });
            return;
        }

        const slots = new Slots(MAX_FETCHES);

        function metadata(ev) {
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
            return { topic: d.sender, event_id: ev.id, payload };
        }

        /** Fetch the decrypted value now (a few at a time); the caller emits in arrival order. */
        async function withValue(msg) {
            const p = msg.payload;
            const release = await slots.acquire();
            if (closed) {
                release();
                return { msg };
            }
            try {
                const r = await sidecar.request("GET", `/v1/groups/${seg(p.group_id)}/readings/${seg(p.msg_id)}`, {
                    query: { wait: DEFAULTS.readingWaitS },
                });
                p.value_status = r.value_status;
                if (r.value !== undefined) {
                    p.value = r.value;
                }
                return { msg };
            } catch (err) {
                return { msg, err };
            } finally {
                release();
            }
        }

        function emit({ msg, err }) {
            if (closed) {
                return;
            }
            if (err) {
                fail(node, msg, err);
                return;
            }
            count += 1;
            node.status({
                fill: "green",
                shape: "dot",
                text: short(RED._("gridkey-readings.status.count", { n: count, sender: msg.payload.sender })),
            });
            node.send(msg);
        }

        const unsubscribe = sidecar.subscribe({
            event(ev) {
                if (ev.kind !== "data.reading" || (group && (ev.data || {}).group_id !== group)) {
                    return;
                }
                const msg = metadata(ev);
                let ready;
                if (!values) {
                    ready = Promise.resolve({ msg });
                } else if (backlog >= MAX_BACKLOG) {
                    // readings arrive faster than values can be fetched: keep the flow moving, say so
                    msg.payload.value_status = "not-fetched";
                    if (!warned) {
                        warned = true;
                        node.warn(RED._("gridkey-readings.errors.backlog", { n: MAX_BACKLOG }));
                    }
                    ready = Promise.resolve({ msg });
                } else {
                    backlog += 1;
                    ready = withValue(msg).finally(() => (backlog -= 1));
                }
                queue = queue.then(() => ready).then(emit);
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
