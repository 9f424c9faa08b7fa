/**
 * Real components for the node tests: a `gridkey serve` process (SQLite, local CA, controller)
 * and a `gridkey fleet` process of real meter agents over CoAP, both on free ports of 127.0.0.1.
 * Nothing is mocked: the nodes under test talk HTTP to the sidecar, the meters negotiate keys.
 *
 * The Python side comes from the project's virtualenv (`make install`); GRIDKEY_PYTHON overrides.
 */
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const dgram = require("node:dgram");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { SidecarClient } = require("../../lib/client");

const ROOT = path.resolve(__dirname, "../../..");
const PYTHON = process.env.GRIDKEY_PYTHON || path.join(ROOT, ".venv/bin/python");

function freeTcpPort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on("error", reject);
        s.listen(0, "127.0.0.1", () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function freeUdpPort() {
    return new Promise((resolve, reject) => {
        const s = dgram.createSocket("udp4");
        s.on("error", reject);
        s.bind(0, "127.0.0.1", () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `check` until it returns something truthy; the last error goes into the failure message. */
async function waitFor(what, check, timeoutMs = 30000, intervalMs = 50) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
        try {
            const v = await check();
            if (v) {
                return v;
            }
        } catch (err) {
            last = err;
        }
        await sleep(intervalMs);
    }
    throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

class Proc {
    constructor(name, argv, logPath, env = {}) {
        this.name = name;
        this.argv = argv;
        this.logPath = logPath;
        this.env = env;
        this.child = null;
    }

    start() {
        const log = fs.openSync(this.logPath, "a");
        this.child = spawn(this.argv[0], this.argv.slice(1), {
            stdio: ["ignore", log, log],
            detached: true, // its own process group, so a kill reaches everything it started
            env: { ...process.env, ...this.env },
        });
        fs.closeSync(log);
        this.exited = new Promise((resolve) => this.child.once("exit", (code, sig) => resolve({ code, sig })));
        return this;
    }

    alive() {
        return this.child && this.child.exitCode === null && this.child.signalCode === null;
    }

    async kill(signal = "SIGKILL") {
        if (!this.alive()) {
            return;
        }
        try {
            process.kill(-this.child.pid, signal);
        } catch (_) {
            return;
        }
        const t = setTimeout(() => {
            try {
                process.kill(-this.child.pid, "SIGKILL");
            } catch (_) {
                /* gone */
            }
        }, 10000);
        await this.exited;
        clearTimeout(t);
    }

    tail(lines = 30) {
        try {
            return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
        } catch (_) {
            return "";
        }
    }
}

const live = new Set();
process.on("exit", () => {
    for (const p of live) {
        try {
            process.kill(-p.child.pid, "SIGKILL");
        } catch (_) {
            /* gone */
        }
    }
});

class World {
    constructor({ meters = 10, controller = true, prefix = "meter-", readingInterval = 0 } = {}) {
        this.readingInterval = readingInterval;
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "gridkey-nodered-"));
        this.data = path.join(this.dir, "data");
        this.meterCount = meters;
        this.controller = controller;
        this.ids = Array.from({ length: meters }, (_, i) => `${prefix}${String(i + 1).padStart(3, "0")}`);
        this.prefix = prefix;
        this.statusFile = path.join(this.dir, "fleet-status.json");
    }

    get url() {
        return `http://127.0.0.1:${this.httpPort}`;
    }

    /** Start the sidecar, wait for /healthz, then start the fleet and wait until it has enrolled. */
    async start() {
        this.httpPort = await freeTcpPort();
        this.coapPort = await freeUdpPort();
        await this.startSidecar();
        if (this.meterCount > 0) {
            await this.startFleet();
        }
        return this;
    }

    async startSidecar() {
        const ready = path.join(this.dir, "sidecar.ready");
        fs.rmSync(ready, { force: true });
        const argv = [
            PYTHON, "-m", "gridkey.cli", "serve",
            "--data", this.data,
            "--coap", `127.0.0.1:${this.coapPort}`,
            "--http", `127.0.0.1:${this.httpPort}`,
            "--session-timeout-ms", "4000",
            "--join-window-ms", "100",
            "--ready-file", ready,
            "--log-level", "info",
        ];
        if (this.controller) {
            argv.push("--controller");
        }
        this.sidecar = new Proc("sidecar", argv, path.join(this.dir, "sidecar.log")).start();
        live.add(this.sidecar);
        try {
            await waitFor("the sidecar to start", () => {
                if (!this.sidecar.alive()) {
                    throw new Error(`the sidecar exited:\n${this.sidecar.tail()}`);
                }
                return fs.existsSync(ready);
            }, 60000);
        } catch (err) {
            if (this.client || !/address already in use/.test(this.sidecar.tail(5))) {
                throw err;
            }
            // a first start only: another process took a port between the probe and the bind
            this.httpPort = await freeTcpPort();
            this.coapPort = await freeUdpPort();
            return this.startSidecar();
        }
        const probe = new SidecarClient({ baseUrl: this.url, timeoutMs: 2000 });
        await waitFor("the sidecar's /healthz", async () => (await probe.request("GET", "/healthz")).status === "ok");
        probe.close();
        this.client = this.client || new SidecarClient({ baseUrl: this.url, token: this.token(), timeoutMs: 15000 });
    }

    async startFleet() {
        const argv = [
            PYTHON, "-m", "gridkey.cli", "fleet",
            "--data", this.data,
            "--count", String(this.meterCount),
            "--prefix", this.prefix,
            "--server", `coap://127.0.0.1:${this.coapPort}`,
            "--status-file", this.statusFile,
            "--resync", "1",
            "--log-level", "warning",
        ];
        if (this.readingInterval > 0) {
            argv.push("--reading-interval", String(this.readingInterval));
        }
        this.fleet = new Proc("fleet", argv, path.join(this.dir, "fleet.log")).start();
        live.add(this.fleet);
        await waitFor("the fleet to enrol", async () => {
            if (!this.fleet.alive()) {
                throw new Error(`the fleet exited:\n${this.fleet.tail()}`);
            }
            const meters = await this.api("GET", "/v1/meters");
            return this.ids.every((id) => meters.some((m) => m.meter_id === id)) && fs.existsSync(this.statusFile);
        }, 60000);
    }

    /** An API token from the sidecar's own token key (all scopes unless some are named). */
    token(scopes = []) {
        const args = ["-m", "gridkey.cli", "token", "issue", "--data", this.data, "--subject", "node-red-tests"];
        for (const s of scopes) {
            args.push("--scope", s);
        }
        return execFileSync(PYTHON, args, { encoding: "utf8" }).trim();
    }

    /** A certificate (PEM) for `id` from the sidecar's local CA, as factory provisioning would issue it. */
    issueCert(id, role = "meter") {
        const out = path.join(this.dir, "issued", id);
        execFileSync(PYTHON, ["-m", "gridkey.cli", "ca", "issue", "--data", this.data, "--id", id, "--role", role, "--out", out], {
            stdio: "pipe",
        });
        return fs.readFileSync(path.join(out, "cert.pem"), "utf8");
    }

    /** Strict roster profile: a statement (base64) an operator identity from the local CA signs for
     * `members` of `groupId`, with their certificates as the sidecar lists them (`gridkey roster sign`). */
    async signRoster(groupId, version, members) {
        const dir = path.join(this.dir, "roster", `${groupId}-${version}`);
        fs.mkdirSync(dir, { recursive: true });
        const op = path.join(this.dir, "issued", "head-end");
        if (!fs.existsSync(path.join(op, "key.pem"))) {
            this.issueCert("head-end", "operator");
        }
        const certs = await this.api("GET", `/v1/groups/${groupId}/certs`);
        const args = ["-m", "gridkey.cli", "roster", "sign", "--key", path.join(op, "key.pem"), "--group", groupId];
        args.push("--version", String(version));
        for (const id of members) {
            const file = path.join(dir, `${id}.pem`);
            fs.writeFileSync(file, certs.find((c) => c.meter_id === id).cert_pem);
            args.push("--cert", file);
        }
        return JSON.parse(execFileSync(PYTHON, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })).statement;
    }

    api(method, p, body) {
        return this.client.request(method, p, body === undefined ? {} : { body });
    }

    /** {meter id: {epoch, key_id}} for one group, from the fleet's status file (metadata only). */
    fleetKeys(groupId) {
        let status;
        try {
            status = JSON.parse(fs.readFileSync(this.statusFile, "utf8"));
        } catch (_) {
            return {}; // being replaced at this moment
        }
        const out = {};
        for (const m of status.meters) {
            const g = m.groups[groupId];
            out[m.meter_id] = g ? { epoch: g.epoch, key_id: g.key_id } : { epoch: 0, key_id: null };
        }
        return out;
    }

    /** Wait until every listed meter holds `epoch` of the group; returns the key id they share. */
    async waitEpoch(groupId, epoch, members = this.ids, timeoutMs = 30000) {
        return waitFor(`epoch ${epoch} of ${groupId} on ${members.length} meters`, () => {
            const keys = this.fleetKeys(groupId);
            const held = members.map((m) => keys[m] || { epoch: 0 });
            if (!held.every((k) => k.epoch === epoch)) {
                return null;
            }
            const ids = new Set(held.map((k) => k.key_id));
            if (ids.size !== 1) {
                throw new Error(`members disagree on epoch ${epoch}: ${JSON.stringify(keys)}`);
            }
            return [...ids][0];
        }, timeoutMs);
    }

    async restartSidecar() {
        await this.sidecar.kill("SIGKILL");
        await this.startSidecar();
    }

    /**
     * The unhandled exceptions the sidecar logged, one string per traceback (a test fails on any).
     * `known` lists patterns of tracebacks an open issue tracks; those are left out, nothing else.
     */
    tracebacks(known = []) {
        let text;
        try {
            text = fs.readFileSync(this.sidecar.logPath, "utf8");
        } catch (_) {
            return [];
        }
        // a block runs from "Traceback" to the exception line (the first unindented line after it)
        const blocks = [];
        const lines = text.split("\n");
        for (let i = 0; i < lines.length; i++) {
            if (lines[i].startsWith("Traceback")) {
                let j = i + 1;
                while (j < lines.length && (lines[j].startsWith(" ") || lines[j] === "")) {
                    j++;
                }
                blocks.push(lines.slice(i, j + 1).join("\n"));
                i = j;
            }
        }
        return blocks.filter((b) => !known.some((re) => re.test(b)));
    }

    async stop() {
        if (this.client) {
            this.client.close();
        }
        for (const p of [this.fleet, this.sidecar]) {
            if (p) {
                await p.kill("SIGTERM");
                live.delete(p);
            }
        }
        if (!process.env.GRIDKEY_KEEP_TMP) {
            fs.rmSync(this.dir, { recursive: true, force: true });
        }
    }
}

module.exports = { World, waitFor, sleep, freeTcpPort, ROOT, PYTHON };
