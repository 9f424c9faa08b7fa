/**
 * gridkey rekey: ask the sidecar for a new epoch and send the message on only once that epoch is
 * committed, i.e. every member confirmed the same fresh key (seen on the shared event stream).
 *
 * The node listens before it asks, and the sidecar's answer names `target_epoch`, the first epoch
 * negotiated after the request (a negotiation already under way keeps its older roster), so the
 * output always stands for keys made after the message arrived, which is what a tamper alarm
 * needs. Output 1: the committed epoch. Output 2: the sidecar gave up (session.failed), could not
 * start (session.idle: fewer than two active members), or the wait ran out.
 */
"use strict";

module.exports = function (RED) {
    const { DEFAULTS } = require("../lib/constants");
    const { seg } = require("../lib/client");
    const { sidecarOf, fail, pick, short, streamStatus } = require("../lib/status");

    function GridKeyRekeyNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sidecar = sidecarOf(RED, node, config);
        const waitS = Number(config.wait) > 0 ? Number(config.wait) : DEFAULTS.rekeyWaitS;
        const waiters = new Set(); // rekeys in flight: {group, target, onEvent, finish}
        let unsubscribe = () => {};

        if (sidecar) {
            unsubscribe = sidecar.subscribe({
                event(ev) {
                    for (const w of waiters) {
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

        function waiting() {
            const targets = [...waiters].filter((w) => w.target).map((w) => `${w.group}@${w.target}`);
            node.status({
                fill: "yellow",
                shape: "ring",
                text: short(RED._("gridkey-rekey.status.waiting", { what: targets.join(", ") || "…" })),
            });
        }

        node.on("input", async function (msg, send, done) {
            if (!sidecar) {
                fail(node, msg, new Error(RED._("gridkey-rekey.errors.no-sidecar")), done);
                return;
            }
            const p = msg.payload && typeof msg.payload === "object" ? msg.payload : {};
            const group = pick(config.group, msg.group_id, p.group_id);
            if (!group) {
                fail(node, msg, new Error(RED._("gridkey-rekey.errors.group")), done);
                return;
            }
            const t0 = Date.now();
            const deadline = t0 + waitS * 1000;
            const aborts = [];
            let settled = false;
            let timer = null;
            const w = { group, target: null, buffered: [] };

            const finish = (port, payload) => {
                if (settled) {
                    return;
                }
                settled = true;
                clearTimeout(timer);
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
                    waiting();
                }
                send(out);
                done();
            };
            w.cancel = () => {
                // the node is being stopped: end the message quietly, no output after close
                settled = true;
                clearTimeout(timer);
                waiters.delete(w);
                done();
            };
            w.onEvent = (ev) => {
                const d = ev.data || {};
                if (d.group_id !== group) {
                    return;
                }
                if (w.target === null) {
                    w.buffered.push(ev); // arrived before the sidecar answered with the target
                    return;
                }
                if (ev.kind === "epoch.committed" && d.epoch >= w.target) {
                    finish(0, {
                        group_id: group,
                        epoch: d.epoch,
                        key_id: d.key_id,
                        members: d.members,
                        trigger: d.trigger,
                        duration_ms: d.duration_ms,
                        target_epoch: w.target,
                        aborts,
                    });
                } else if (ev.kind === "session.aborted" && d.epoch >= w.target) {
                    aborts.push({ epoch: d.epoch, reason: d.reason, excluded: d.excluded || [] });
                } else if (ev.kind === "session.failed" && d.epoch >= w.target) {
                    finish(1, { group_id: group, target_epoch: w.target, reason: "failed", detail: d.reason, aborts });
                } else if (ev.kind === "session.idle" && ev.id > w.requestedAfter) {
                    finish(1, { group_id: group, target_epoch: w.target, reason: "idle", detail: d.reason, aborts });
                }
            };
            waiters.add(w);
            waiting();

            const giveUp = async () => {
                // The stream may have been down for the whole wait; the store has the last word.
                try {
                    const epochs = await sidecar.request("GET", `/v1/groups/${seg(group)}/epochs`, { query: { limit: 5 } });
                    const hit = w.target !== null && epochs.filter((e) => e.epoch >= w.target).pop();
                    if (hit) {
                        finish(0, {
                            group_id: group,
                            epoch: hit.epoch,
                            key_id: hit.key_id,
                            members: hit.members,
                            trigger: hit.trigger,
                            duration_ms: hit.duration_ms,
                            target_epoch: w.target,
                            aborts,
                        });
                        return;
                    }
                } catch (_) {
                    /* report the timeout below */
                }
                finish(1, {
                    group_id: group,
                    target_epoch: w.target,
                    reason: "timeout",
                    detail: RED._("gridkey-rekey.errors.timeout", { s: waitS }),
                    aborts,
                });
            };
            timer = setTimeout(giveUp, Math.max(0, deadline - Date.now()));

            try {
                // listen first: a commit that lands before the answer must not be missed
                await sidecar.stream.whenConnected(Math.max(1, deadline - Date.now()));
                w.requestedAfter = Number(sidecar.stream.lastEventId) || 0;
                const answer = await sidecar.request("POST", `/v1/groups/${seg(group)}/rekey`);
                if (settled) {
                    return;
                }
                w.target = answer.target_epoch;
                waiting();
                for (const ev of w.buffered.splice(0)) {
                    w.onEvent(ev);
                }
            } catch (err) {
                if (!settled) {
                    settled = true;
                    clearTimeout(timer);
                    waiters.delete(w);
                    fail(node, msg, err, done);
                }
            }
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
