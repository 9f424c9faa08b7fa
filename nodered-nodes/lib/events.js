/**
 * One resumable server-sent-events connection to `GET /v1/events`, shared by every node that
 * uses a `gridkey-sidecar` config node.
 *
 * Hand-written (about 150 lines) rather than a dependency: the EventSource packages on npm either
 * lack custom headers (the bearer token), or cannot take the TLS options of a tls-config node, or
 * pull in a fetch polyfill. What it does, after the WHATWG HTML event-stream rules (§9.2):
 *   - the first connection asks for `after=now`, so a deploy does not replay the sidecar's history;
 *     the sidecar answers with a data-less `id:` naming the newest event, which (as in a browser's
 *     EventSource) sets the last event id without dispatching anything;
 *   - every reconnection sends `Last-Event-ID`, and the sidecar replays what was missed from its
 *     store, so nothing is lost across a sidecar restart or a network blip;
 *   - ids are the sidecar's increasing event ids, so an event at or below the last one seen is
 *     dropped: nothing is delivered twice;
 *   - reconnects back off exponentially with jitter, honour `Retry-After` on 429/503, and an idle
 *     watchdog (the sidecar sends a keepalive every 15 s) replaces a half-open connection.
 */
"use strict";

const { EventEmitter } = require("node:events");
const { GridKeyError } = require("./client");

const STATES = Object.freeze({
    IDLE: "idle",
    CONNECTING: "connecting",
    CONNECTED: "connected",
    RECONNECTING: "reconnecting",
    STOPPED: "stopped",
});

class EventStream extends EventEmitter {
    /**
     * @param {import("./client").SidecarClient} client
     * @param {object} [opts]
     * @param {number} [opts.minDelayMs] first reconnect delay (default 500 ms)
     * @param {number} [opts.maxDelayMs] longest reconnect delay (default 30 s)
     * @param {number} [opts.idleMs]     reconnect when nothing arrives for this long (default 45 s)
     */
    constructor(client, { minDelayMs = 500, maxDelayMs = 30000, idleMs = 45000 } = {}) {
        super();
        this.client = client;
        this.minDelayMs = minDelayMs;
        this.maxDelayMs = maxDelayMs;
        this.idleMs = idleMs;
        this.state = STATES.IDLE;
        this.lastEventId = null; // null: start from now
        this.lastError = null;
        this.connects = 0;
        this._failures = 0;
        this._req = null;
        this._timer = null;
        this._idle = null;
        this._connected = null;
    }

    start() {
        if (this.state === STATES.IDLE || this.state === STATES.STOPPED) {
            this._connect();
        }
    }

    stop() {
        this._setState(STATES.STOPPED);
        clearTimeout(this._timer);
        clearTimeout(this._idle);
        if (this._req) {
            this._req.destroy();
            this._req = null;
        }
    }

    /** Resolves once the stream is connected (it knows where it stands), or rejects after `timeoutMs`. */
    whenConnected(timeoutMs) {
        if (this.state === STATES.CONNECTED) {
            return Promise.resolve();
        }
        if (!this._connected) {
            // one listener however many callers wait (a burst of rekeys during a reconnect)
            this._connected = new Promise((resolve, reject) => {
                const onState = (state) => {
                    if (state === STATES.CONNECTED || state === STATES.STOPPED) {
                        this.removeListener("state", onState);
                        this._connected = null;
                        if (state === STATES.CONNECTED) {
                            resolve();
                        } else {
                            reject(new GridKeyError("the event stream was closed", { code: "ESTOPPED" }));
                        }
                    }
                };
                this.on("state", onState);
            });
            this._connected.catch(() => {}); // a rejection nobody waits for any more is not an error
        }
        let timer;
        const timeout = new Promise((resolve, reject) => {
            timer = setTimeout(() => {
                const why = this.lastError ? `: ${this.lastError.message}` : "";
                reject(new GridKeyError(`the event stream did not connect within ${timeoutMs} ms${why}`, { code: "ETIMEDOUT" }));
            }, timeoutMs);
        });
        return Promise.race([this._connected, timeout]).finally(() => clearTimeout(timer));
    }

    _setState(state, error) {
        if (error !== undefined) {
            this.lastError = error;
        }
        if (state !== this.state) {
            this.state = state;
            this.emit("state", state, this.lastError);
        }
    }

    _connect() {
        this._setState(this.connects === 0 && this._failures === 0 ? STATES.CONNECTING : STATES.RECONNECTING);
        const headers = { accept: "text/event-stream", "cache-control": "no-cache" };
        const query = {};
        if (this.lastEventId === null) {
            query.after = "now";
        } else {
            headers["last-event-id"] = this.lastEventId;
        }
        let req;
        try {
            const opts = { query, headers, timeoutMs: 0, stream: true };
            req = this.client.open("GET", "/v1/events", opts, (res) => this._opened(req, res), (err) => this._lost(req, err));
        } catch (err) {
            // e.g. a header Node refuses: report it like any failed connection, never throw from a timer
            this._req = { destroy() {} };
            this._lost(this._req, err);
            return;
        }
        this._req = req;
        this._touch(req); // also bounds the wait for the answer itself
    }

    _opened(req, res) {
        if (res.statusCode !== 200 || !/^text\/event-stream/.test(res.headers["content-type"] || "")) {
            this._refused(req, res);
            return;
        }
        this.connects += 1;
        this._failures = 0;
        const parser = new Parser((block) => this._block(block));
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
            this._touch(req);
            parser.push(chunk);
        });
        res.on("end", () => this._lost(req, new GridKeyError("the sidecar closed the event stream")));
        res.on("error", (err) => this._lost(req, err));
        if (this.lastEventId !== null) {
            this._setState(STATES.CONNECTED, null); // a resume knows where it stands already
        } // else: connected once the sidecar names the newest event (after=now)
    }

    _touch(req) {
        clearTimeout(this._idle);
        this._idle = setTimeout(() => {
            req.destroy(new GridKeyError(`no data on the event stream for ${this.idleMs} ms`, { code: "EIDLE" }));
        }, this.idleMs);
    }

    /** One complete block of fields: an event, or a data-less id that only moves the position. */
    _block({ id, type, data }) {
        if (id !== null && !/^\d{1,18}$/.test(id)) {
            id = null; // the sidecar's ids are numbers; anything else is not ours to send back in a header
        }
        if (id !== null) {
            const n = Number(id);
            if (this.lastEventId !== null && Number.isSafeInteger(n) && n <= Number(this.lastEventId)) {
                return; // delivered before (or the position we already hold)
            }
            this.lastEventId = id;
        }
        if (this.state !== STATES.CONNECTED && this.lastEventId !== null) {
            this._setState(STATES.CONNECTED, null);
        }
        if (data === null) {
            return;
        }
        let body;
        try {
            body = JSON.parse(data);
        } catch (_) {
            this.emit("malformed", { id, type, data: data.slice(0, 200) });
            return;
        }
        this.emit("event", { id: id === null ? null : Number(id), kind: type, data: body });
    }

    _refused(req, res) {
        const chunks = [];
        res.setEncoding("utf8");
        res.on("data", (c) => chunks.length < 16 && chunks.push(c));
        res.on("error", () => {});
        res.on("end", () => {
            let detail = chunks.join("").slice(0, 300);
            try {
                detail = JSON.parse(detail).detail || detail;
            } catch (_) {
                /* not problem+json */
            }
            const err = new GridKeyError(`event stream refused: ${res.statusCode} ${detail}`, {
                status: res.statusCode,
                detail,
            });
            const retryAfter = Number(res.headers["retry-after"]);
            const asked = Number.isFinite(retryAfter) ? Math.max(this.minDelayMs, retryAfter * 1000) : undefined;
            this._lost(req, err, asked === undefined ? undefined : Math.min(asked, this.maxDelayMs * 10));
        });
    }

    _lost(req, err, delayMs) {
        if (req !== this._req || this.state === STATES.STOPPED) {
            return; // an old connection's late news
        }
        this._req = null;
        clearTimeout(this._idle);
        req.destroy();
        this._failures += 1;
        // a refused token will not get better quickly: wait long; a restart usually takes seconds
        const slow = err && (err.status === 401 || err.status === 403);
        const base = slow ? this.maxDelayMs : Math.min(this.maxDelayMs, this.minDelayMs * 2 ** (this._failures - 1));
        const wait = delayMs !== undefined ? delayMs : base / 2 + Math.random() * (base / 2);
        this._setState(STATES.RECONNECTING, err);
        this.emit("lost", err, wait);
        this._timer = setTimeout(() => this._connect(), wait);
    }
}

/**
 * An incremental text/event-stream parser (WHATWG HTML §9.2.6): calls `onBlock({id, type, data})`
 * at every blank line that ends a block with an id or data (`data` is null when the block had none).
 */
class Parser {
    constructor(onBlock) {
        this.onBlock = onBlock;
        this.buf = "";
        this.first = true;
        this._reset();
    }

    _reset() {
        this.data = [];
        this.type = "";
        this.id = null;
    }

    push(chunk) {
        let text = this.buf + chunk;
        if (this.first && text.length) {
            text = text.replace(/^\uFEFF/, "");
            this.first = false;
        }
        // a CR at the very end may be the first half of a CRLF: wait for the next chunk
        const hold = text.endsWith("\r") ? "\r" : "";
        const lines = (hold ? text.slice(0, -1) : text).split(/\r\n|\r|\n/);
        this.buf = lines.pop() + hold;
        for (const line of lines) {
            this._line(line);
        }
    }

    _line(line) {
        if (line === "") {
            if (this.data.length || this.id !== null) {
                this.onBlock({
                    id: this.id,
                    type: this.type || "message",
                    data: this.data.length ? this.data.join("\n") : null,
                });
            }
            this._reset();
            return;
        }
        if (line[0] === ":") {
            return; // a comment (keepalive)
        }
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value[0] === " ") {
            value = value.slice(1);
        }
        if (field === "data") {
            this.data.push(value);
        } else if (field === "event") {
            this.type = value;
        } else if (field === "id" && !value.includes("\0")) {
            this.id = value;
        }
        // "retry" is the server's hint; this client's own backoff governs reconnects
    }
}

module.exports = { EventStream, Parser, STATES };
