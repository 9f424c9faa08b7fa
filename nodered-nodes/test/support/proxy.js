/**
 * A TCP relay on 127.0.0.1 between the nodes and the sidecar that a test can cut (every open
 * connection reset, new ones refused) and restore: a network blip on demand, over real sockets.
 */
"use strict";

const net = require("node:net");

class Blip {
    constructor(targetPort) {
        this.targetPort = targetPort;
        this.up = true;
        this.sockets = new Set();
        this.accepted = 0;
    }

    listen() {
        this.server = net.createServer((client) => {
            if (!this.up) {
                client.destroy();
                return;
            }
            this.accepted += 1;
            const upstream = net.connect(this.targetPort, "127.0.0.1");
            for (const s of [client, upstream]) {
                this.sockets.add(s);
                s.on("close", () => this.sockets.delete(s));
                s.on("error", () => {});
            }
            client.pipe(upstream).pipe(client);
            client.on("close", () => upstream.destroy());
            upstream.on("close", () => client.destroy());
        });
        return new Promise((resolve) => {
            this.server.listen(0, "127.0.0.1", () => {
                this.port = this.server.address().port;
                resolve(this);
            });
        });
    }

    get url() {
        return `http://127.0.0.1:${this.port}`;
    }

    cut() {
        this.up = false;
        for (const s of this.sockets) {
            s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
        }
    }

    restore() {
        this.up = true;
    }

    close() {
        this.cut();
        return new Promise((resolve) => this.server.close(() => resolve()));
    }
}

module.exports = { Blip };
