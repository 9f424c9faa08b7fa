"use strict";

/**
 * HTTPS: the sidecar behind a TLS front end (as nginx would put it), over real sockets. The
 * config node trusts the server through a core tls-config node holding the CA certificate; the
 * REST calls and the event stream both use it, and a server it cannot verify is refused clearly.
 */
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");
const path = require("node:path");
const { mount, runtimeHooks } = require("./support/nodered");
const { World } = require("./support/world");

function makeCerts(dir) {
    const run = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=gridkey test front-end CA", "-days", "2");
    run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
    fs.writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext");
    run("req", "-x509", ...ec, "-keyout", "other.key", "-out", "other-ca.pem", "-subj", "/CN=some other CA", "-days", "2");
}

/** A TLS-terminating reverse proxy to the sidecar (streams responses, so SSE passes through). */
function frontEnd(dir, targetPort) {
    const server = https.createServer(
        { key: fs.readFileSync(path.join(dir, "server.key")), cert: fs.readFileSync(path.join(dir, "server.pem")) },
        (req, res) => {
            const up = http.request(
                { host: "127.0.0.1", port: targetPort, path: req.url, method: req.method, headers: req.headers },
                (r) => {
                    res.writeHead(r.statusCode, r.headers);
                    r.pipe(res);
                },
            );
            up.on("error", () => res.destroy());
            req.pipe(up);
        },
    );
    return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

describe("gridkey-sidecar over HTTPS", function () {
    this.timeout(60000);
    let world;
    let front;
    let dir;

    before(async function () {
        world = await new World({ meters: 0, controller: false }).start();
        dir = fs.mkdtempSync(path.join(world.dir, "tls-"));
        makeCerts(dir);
        front = await frontEnd(dir, world.httpPort);
    });
    after(async function () {
        front.closeAllConnections();
        front.close();
        await world.stop();
    });
    runtimeHooks();

    const url = () => `https://127.0.0.1:${front.address().port}`;
    const tls = (ca) => ({ id: "tls", type: "tls-config", ca: path.join(dir, ca), verifyservercert: true, cert: "", key: "" });

    it("trusts the front end through a tls-config node's CA, for requests and the event stream", async function () {
        const flow = await mount(
            world,
            [
                tls("ca.pem"),
                { id: "g", type: "gridkey-group", sidecar: "sc", operation: "list", wires: [["out"]] },
                { id: "ev", type: "gridkey-key-events", sidecar: "sc", kinds: ["group.created"], wires: [["events"]] },
            ],
            { url: url(), extra: { tls: "tls" } },
        );
        await flow.node("sc").stream.whenConnected(10000);
        await world.api("POST", "/v1/groups", { group_id: "over-tls", members: [] });
        assert.equal((await flow.wire("events").next(1)).payload.group_id, "over-tls");
        flow.node("g").receive({});
        assert.ok((await flow.wire("out").next(1)).payload.some((g) => g.group_id === "over-tls"));
    });

    it("refuses a server its CA did not certify, and says so", async function () {
        for (const extra of [{ tls: "tls" }, {}]) {
            const flow = await mount(
                world,
                [tls("other-ca.pem"), { id: "g", type: "gridkey-group", sidecar: "sc", operation: "list", wires: [["out"]] }],
                { url: url(), extra },
            );
            flow.node("g").receive({});
            const refused = await flow.caught.next(1);
            assert.match(refused.error.message, /cannot reach https:\/\/127\.0\.0\.1:\d+: (SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO)/);
            assert.equal(flow.wire("out").got.length, 0);
            await require("./support/nodered").helper.unload();
        }
    });
});
