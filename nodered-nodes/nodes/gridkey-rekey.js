/**
 * gridkey rekey: ask the sidecar for a new epoch and send the message on only once that epoch is
 * committed, i.e. every member confirmed the same fresh key (seen on the shared event stream).
 *
 * The node listens before it asks. The sidecar queues the request (`request_id`) for the group's
 * next negotiation and says which one took it up: the `session.started` event that lists the id.
 * That session started after the message arrived, so its epoch, or any later one, carries keys
 * made after the alarm, which is what a tamper flow needs; a negotiation already under way keeps
 * its older roster and does not count, and one superseded by a membership change is replaced by
 * a session that takes the request up again. Output 1: the committed epoch. Output 2: the sidecar
 * gave up (session.failed), could not start (session.idle: fewer than two active members), the
 * negotiation was aborted (only with "fail on abort"), or the wait ran out.
 */
"use strict";

module.exports = function (RED) {
    const { DEFAULTS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { checkId, pick } = require("../lib/inputs");
    const { sidecarOf, fail, short, streamStatus } = require("../lib/status");

    function GridKeyRekeyNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);
        const waitS = Number(config.wait) > 0 ? Number(config.wait) : DEFAULTS.rekeyWaitS;
        const failOnAbort = config.failOnAbort === true || config.failOnAbort === "true";
        const waiters = new Set(); // rekeys in flight
        let unsubscribe = () => {};

        if (sidecar) {
            unsubscribe = sidecar.subscribe({
                event(ev) {
                    for (const w of [...waiters]) {
                        w.onEvent(ev);
                    }
                },
                state(state, err) {
                    if (waiters.size === 0) {
                        node.status(streamStatus(RED, state, err));
                    }
                },
            });
        }

        function showWaiting() {
            const what = [...waiters].map((w) => (w.epoch !== null ? `${w.group}@${w.epoch}` : w.group)).join(", ");
            node.status({ fill: "yellow", shape: "ring", text: short(RED._("gridkey-rekey.status.waiting", { what })) });
        }

        node.on("input", function (msg, send, done) {
            if (!sidecar) {
                fail(node, msg, new Error(RED._("gridkey-rekey.errors.no-sidecar")), done);
                return;
            }
            const p = msg.payload && typeof msg.payload === "object" ? msg.payload : {};
            let group;
            try {
                group = checkId(RED, pick(config.group, msg.group_id, p.group_id), "group");
            } catch (err) {
                fail(node, msg, err, done);
                return;
            }
            const t0 = Date.now();
            const w = {
                group,
                request: null, // the sidecar's request id, once it answered
                floor: null, // target_epoch: the lowest epoch that can carry the request
                epoch: null, // the epoch of the session that took the request up
                buffered: [], // this group's events that arrived before the answer
                aborts: [],
                settled: false,
            };
            const base = () => ({ group_id: group, target_epoch: w.epoch !== null ? w.epoch : w.floor, aborts: w.aborts });

            function finish(port, payload) {
                if (w.settled) {
                    return;
                }
                w.settled = true;
                clearTimeout(w.timer);
                waiters.delete(w);
                msg.payload = { ...payload, elapsed_ms: Date.now() - t0 };
                const out = [null, null];
                out[port] = msg;
                if (port === 0) {
                    node.status({
                        fill: "green",
                        shape: "dot",
                        text: RED._("gridkey-rekey.status.committed", { epoch: payload.epoch, key: payload.key_id }),
                    });
                } else {
                    node.status({ fill: "red", shape: "ring", text: short(`${group}: ${payload.reason}`) });
                }
                if (waiters.size) {
                    showWaiting();
                }
                send(out);
                done();
            }

            function committed(e) {
                finish(0, {
                    ...base(),
                    epoch: e.epoch,
                    key_id: e.key_id,
                    members: e.members,
                    trigger: e.trigger,
                    duration_ms: e.duration_ms,
                });
            }

            w.onEvent = (ev) => {
                const d = ev.data || {};
                if (w.settled || d.group_id !== group) {
                    return;
                }
                if (w.request === null) {
                    w.buffered.push(ev); // the sidecar has not answered yet: keep the order
                    return;
                }
                const ours = Array.isArray(d.requests) && d.requests.includes(w.request);
                if (ev.kind === "session.started" && ours) {
                    w.epoch = d.epoch;
                    showWaiting();
                } else if (ev.kind === "session.idle" && ours) {
                    finish(1, { ...base(), reason: "idle", detail: d.reason });
                } else if (w.epoch === null) {
                    // not taken up yet: what happens now belongs to an older negotiation
                } else if (ev.kind === "epoch.committed" && d.epoch >= w.epoch) {
                    committed(d);
                } else if (ev.kind === "session.aborted" && d.epoch >= w.epoch) {
                    w.aborts.push({ epoch: d.epoch, reason: d.reason, excluded: d.excluded || [] });
                    if (failOnAbort) {
                        finish(1, { ...base(), reason: "aborted", detail: d.reason });
                    }
                } else if (ev.kind === "session.failed" && d.epoch >= w.epoch) {
                    finish(1, { ...base(), reason: "failed", detail: d.reason });
                }
            };
            w.cancel = () => {
                // the node is being stopped: end the message quietly, no output after close
                w.settled = true;
                clearTimeout(w.timer);
                waiters.delete(w);
                done();
            };

            async function giveUp() {
                // One deadline for everything. The stream may have been down the whole time: the
                // store has the last word on whether the epoch was committed.
                if (w.settled) {
                    return;
                }
                if (w.epoch !== null) {
                    try {
                        const epochs = await sidecar.request("GET", `/v1/groups/${seg(group)}/epochs`, { query: { limit: 5 } });
                        const hit = Array.isArray(epochs) && epochs.filter((e) => e.epoch >= w.epoch).pop();
                        if (hit) {
                            committed(hit);
                            return;
                        }
                    } catch (_) {
                        /* report the timeout below */
                    }
                }
                const stream = sidecar.stream.state === "connected" ? "" : ` (${sidecar.stream.state}${
                    sidecar.stream.lastError ? `: ${sidecar.stream.lastError.message}` : ""})`;
                finish(1, { ...base(), reason: "timeout", detail: RED._("gridkey-rekey.errors.timeout", { s: waitS }) + stream });
            }

            waiters.add(w);
            showWaiting();
            w.timer = setTimeout(() => {
                giveUp().catch((err) => fail(node, msg, err, done));
            }, waitS * 1000);

            (async () => {
                // listen first: a commit that lands before the answer must not be missed; the
                // deadline above ends the wait if the stream never connects
                await sidecar.stream.whenConnected(waitS * 1000 + 1000);
                if (w.settled) {
                    return;
                }
                const answer = await sidecar.request("POST", `/v1/groups/${seg(group)}/rekey`);
                if (w.settled) {
                    return;
                }
                if (!answer || !Number.isInteger(answer.request_id)) {
                    throw new Error(RED._("gridkey-rekey.errors.answer"));
                }
                w.request = answer.request_id;
                w.floor = answer.target_epoch;
                for (const ev of w.buffered.splice(0)) {
                    w.onEvent(ev);
                }
            })().catch((err) => {
                if (!w.settled) {
                    w.settled = true;
                    clearTimeout(w.timer);
                    waiters.delete(w);
                    fail(node, msg, err, done);
                }
            });
        });

        node.on("close", function (removed, done) {
            for (const w of [...waiters]) {
                w.cancel();
            }
            unsubscribe();
            done();
        });
    }

    RED.nodes.registerType("gridkey-rekey", GridKeyRekeyNode);
};
