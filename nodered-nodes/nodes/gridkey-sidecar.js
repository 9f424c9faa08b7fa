/**
 * gridkey-sidecar: the connection to one GridKey sidecar (its REST API), shared by every GridKey
 * node that names it. It holds the bearer token as a credential (never in flows.json) and owns
 * one event stream for all of them, opened when the first node subscribes and closed with the
 * last, resumed with Last-Event-ID across restarts and blips (lib/events.js).
 */
"use strict";

module.exports = function (RED) {
    const { SidecarClient } = require("../lib/client");
    const { EventStream } = require("../lib/events");
    const { DEFAULTS } = require("../lib/constants");

    function GridKeySidecarNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        node.name = config.name;
        node.url = config.url;
        const seconds = Number(config.timeout);
        node.timeoutMs = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : DEFAULTS.timeoutMs;
        const tls = {};
        if (config.tls) {
            const tlsNode = RED.nodes.getNode(config.tls);
            if (tlsNode) {
                tlsNode.addTLSOptions(tls);
            }
        }
        const token = (node.credentials && node.credentials.token) || "";
        if (config.tls && /^http:/i.test(config.url || "")) {
            node.warn(RED._("gridkey-sidecar.errors.tls-on-http"));
        }
        try {
            node.client = new SidecarClient({ baseUrl: config.url, token, tls, timeoutMs: node.timeoutMs });
        } catch (err) {
            node.client = null;
            node.configError = err;
            node.error(RED._("gridkey-sidecar.errors.bad-url", { error: err.message }));
        }
        node.stream = node.client ? new EventStream(node.client) : null;
        const subscribers = new Set();

        if (node.stream) {
            node.stream.on("event", (ev) => {
                for (const s of subscribers) {
                    if (s.event) {
                        try {
                            s.event(ev);
                        } catch (err) {
                            node.error(RED._("gridkey-sidecar.errors.subscriber", { error: err.message }));
                        }
                    }
                }
            });
            node.stream.on("state", (state, err) => {
                if (state === "connected") {
                    node.log(RED._("gridkey-sidecar.log.connected", { url: node.client.base, id: node.stream.lastEventId }));
                }
                for (const s of subscribers) {
                    if (s.state) {
                        try {
                            s.state(state, err);
                        } catch (e) {
                            node.error(RED._("gridkey-sidecar.errors.subscriber", { error: e.message }));
                        }
                    }
                }
            });
            node.stream.on("lost", (err, waitMs) => {
                node.log(RED._("gridkey-sidecar.log.lost", { error: err.message, ms: Math.round(waitMs) }));
            });
            node.stream.on("malformed", (ev) => {
                node.warn(RED._("gridkey-sidecar.errors.malformed", { id: ev.id }));
            });
        }

        /**
         * Receive the sidecar's events: `handlers.event({id, kind, data})` and
         * `handlers.state(state, error)`. Returns the function that unsubscribes.
         */
        node.subscribe = function (handlers) {
            if (!node.stream) {
                return () => {};
            }
            subscribers.add(handlers);
            if (handlers.state) {
                handlers.state(node.stream.state, node.stream.lastError);
            }
            node.stream.start();
            return () => {
                subscribers.delete(handlers);
                if (subscribers.size === 0) {
                    node.stream.stop();
                }
            };
        };

        /** The REST API: resolves with the JSON answer, rejects with a GridKeyError. */
        node.request = function (method, path, opts) {
            return node.client.request(method, path, opts);
        };

        node.on("close", function (done) {
            subscribers.clear();
            if (node.stream) {
                node.stream.stop();
            }
            if (node.client) {
                node.client.close();
            }
            done();
        });
    }

    RED.nodes.registerType("gridkey-sidecar", GridKeySidecarNode, {
        credentials: { token: { type: "password" } },
    });
};
