"use strict";

/**
 * The event-stream client against a scripted SSE server on a real socket: the cases a healthy
 * sidecar does not produce on demand (a server that repeats events, refuses with 401 or 429,
 * goes silent, splits lines across packets).
 */
const assert = require("node:assert/strict");
const http = require("node:http");
const { SidecarClient } = require("../lib/client");
const { EventStream, Parser } = require("../lib/events");
const { waitFor } = require("./support/world");

function scriptedServer(script) {
    const requests = [];
    const server = http.createServer((req, res) => {
        requests.push({ url: req.url, lastEventId: req.headers["last-event-id"], auth: req.headers.authorization });
        script(requests.length, req, res);
    });
    return new Promise((resolve) => {
        server.listen(0, "127.0.0.1", () => {
            server.url = `http://127.0.0.1:${server.address().port}`;
            server.requests = requests;
            resolve(server);
        });
    });
}

function sse(res) {
    res.writeHead(200, { "content-type": "text/event-stream" });
}

const ev = (id, kind, data) => `id: ${id}\nevent: ${kind}\ndata: ${JSON.stringify(data)}\n\n`;

describe("event stream client", function () {
    this.timeout(30000);
    let server;
    let stream;
    let client;

    afterEach(function () {
        if (stream) {
            stream.stop();
        }
        if (client) {
            client.close();
        }
        server.closeAllConnections();
        server.close();
    });

    function connect(opts = {}) {
        client = new SidecarClient({ baseUrl: server.url, token: "tok" });
        stream = new EventStream(client, { minDelayMs: 50, maxDelayMs: 400, ...opts });
        const got = [];
        stream.on("event", (e) => got.push(e));
        stream.start();
        return got;
    }

    it("starts from now, then resumes with Last-Event-ID and drops what it already delivered", async function () {
        server = await scriptedServer((n, req, res) => {
            sse(res);
            if (n === 1) {
                res.write("retry: 3000\n\nid: 41\n\n"); // the sidecar names the newest event, no data
                res.write(ev(42, "epoch.committed", { epoch: 1 }));
                res.end(ev(43, "epoch.committed", { epoch: 2 }));
            } else {
                // a server that replays a little too much: 43 again, then new ones
                res.write(ev(43, "epoch.committed", { epoch: 2 }));
                res.write(ev(44, "member.added", { members: ["m"] }));
            }
        });
        const got = connect();
        await waitFor("four events", () => got.length >= 3);
        await new Promise((r) => setTimeout(r, 200));
        assert.deepEqual(got.map((e) => e.id), [42, 43, 44]);
        assert.deepEqual(got[2], { id: 44, kind: "member.added", data: { members: ["m"] } });
        assert.equal(server.requests[0].url, "/v1/events?after=now");
        assert.equal(server.requests[0].lastEventId, undefined);
        assert.equal(server.requests[0].auth, "Bearer tok");
        assert.equal(server.requests[1].url, "/v1/events");
        assert.equal(server.requests[1].lastEventId, "43");
        assert.equal(stream.state, "connected");
    });

    it("is connected only once it knows where it stands", async function () {
        let release;
        server = await scriptedServer((n, req, res) => {
            sse(res);
            res.write("retry: 3000\n\n");
            release = () => res.write("id: 7\n\n");
        });
        connect();
        await waitFor("the request", () => server.requests.length === 1);
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(stream.state, "connecting");
        release();
        await stream.whenConnected(2000);
        assert.equal(stream.lastEventId, "7");
    });

    it("parses lines split anywhere, CRLF, comments and multi-line data", function () {
        const blocks = [];
        const p = new Parser((b) => blocks.push(b));
        const text = "\uFEFF: hello\r\nid: 1\r\nevent: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\nid: 2\ndata: {}\n\n";
        for (const ch of text) {
            p.push(ch); // one character per packet
        }
        assert.deepEqual(blocks, [
            { id: "1", type: "a", data: '{"x":\n1}' },
            { id: "2", type: "message", data: "{}" },
        ]);
    });

    it("backs off on 429 as the server asks, and says why it is not connected", async function () {
        server = await scriptedServer((n, req, res) => {
            if (n === 1) {
                res.writeHead(429, { "content-type": "application/problem+json", "retry-after": "1" });
                res.end(JSON.stringify({ status: 429, title: "Too Many Requests", detail: "too many open event streams" }));
            } else {
                sse(res);
                res.write("id: 1\n\n");
            }
        });
        connect();
        await waitFor("the refusal", () => stream.lastError && stream.state === "reconnecting");
        assert.match(stream.lastError.message, /429 too many open event streams/);
        const t0 = Date.now();
        await stream.whenConnected(5000);
        assert.ok(Date.now() - t0 >= 800, "waited for Retry-After");
        assert.equal(server.requests.length, 2);
    });

    it("does not spin on Retry-After: 0", async function () {
        server = await scriptedServer((n, req, res) => {
            res.writeHead(503, { "content-type": "application/problem+json", "retry-after": "0" });
            res.end(JSON.stringify({ status: 503, detail: "busy" }));
        });
        connect({ minDelayMs: 200 });
        await new Promise((r) => setTimeout(r, 1000));
        assert.ok(server.requests.length <= 6, `${server.requests.length} requests in 1 s`);
        assert.match(stream.lastError.message, /503 busy/);
    });

    it("replaces a connection that went silent", async function () {
        server = await scriptedServer((n, req, res) => {
            sse(res);
            res.write(n === 1 ? "id: 5\n\n" : "id: 5\n\n" + ev(6, "group.created", { group_id: "g" }));
            // and then nothing, not even a keepalive
        });
        const got = connect({ idleMs: 300 });
        await waitFor("a second connection and the event", () => got.length === 1, 5000);
        assert.equal(server.requests[1].lastEventId, "5");
    });
});
