/**
 * A small client for the GridKey sidecar's REST API (docs/api.md), on Node's own http/https.
 *
 * Not `fetch`: Node's fetch cannot take a CA certificate or a client certificate without
 * undici's Agent, which is not a public module of Node 20. http/https take the options a
 * `tls-config` node produces as they are, and the event stream (./events.js) uses the same
 * request path, so REST calls and the stream trust exactly the same server.
 */
"use strict";

const http = require("node:http");
const https = require("node:https");

const MAX_BODY = 4 * 1024 * 1024; // an answer bigger than this is not one the sidecar sends
const FREE_SOCKET_MS = 30000;

/** A refused or failed request: `status` (0 when no HTTP answer came) and the problem+json detail. */
class GridKeyError extends Error {
    constructor(message, { status = 0, type, title, detail, code } = {}) {
        super(message);
        this.name = "GridKeyError";
        this.status = status;
        this.type = type;
        this.title = title;
        this.detail = detail;
        this.code = code;
    }
}

function problemFrom(status, contentType, text) {
    let body;
    if (/json/.test(contentType || "")) {
        try {
            body = JSON.parse(text);
        } catch (_) {
            body = undefined;
        }
    }
    const detail = body && typeof body.detail === "string" ? body.detail : (text || "").slice(0, 200);
    const title = body && typeof body.title === "string" ? body.title : http.STATUS_CODES[status] || "error";
    return new GridKeyError(`${status} ${title}: ${detail}`, {
        status,
        type: body && body.type,
        title,
        detail,
    });
}

class SidecarClient {
    /**
     * @param {object} opts
     * @param {string} opts.baseUrl   e.g. http://127.0.0.1:8080
     * @param {string} [opts.token]   bearer token (operator API)
     * @param {object} [opts.tls]     https options: ca, cert, key, passphrase, servername, rejectUnauthorized
     * @param {number} [opts.timeoutMs] per request (default 10 s)
     */
    constructor({ baseUrl, token, tls, timeoutMs = 10000 }) {
        let url;
        try {
            url = new URL(baseUrl);
        } catch (_) {
            throw new GridKeyError(`not a URL: ${baseUrl}`, { code: "EBADURL" });
        }
        if (url.protocol !== "http:" && url.protocol !== "https:") {
            throw new GridKeyError(`the sidecar URL must be http:// or https://, got ${url.protocol}`, {
                code: "EBADURL",
            });
        }
        if (url.username || url.password) {
            // it would be echoed in logs, statuses and errors: credentials belong in the token field
            throw new GridKeyError("the sidecar URL must not carry a user name or password; use the token", {
                code: "EBADURL",
            });
        }
        this.token = typeof token === "string" ? token.trim() : "";
        if (/[^\x21-\x7e]/.test(this.token)) {
            throw new GridKeyError("the token holds characters an HTTP header cannot carry", { code: "EBADTOKEN" });
        }
        this.base = url.href.replace(/\/+$/, "");
        this.secure = url.protocol === "https:";
        this.tls = tls || {};
        this.timeoutMs = timeoutMs;
        const Agent = this.secure ? https.Agent : http.Agent;
        // Idle pooled sockets are closed after FREE_SOCKET_MS, well before a server drops them
        // (waitress: 120 s), so a request never goes out on a socket the server already closed.
        this.agent = new Agent({ keepAlive: true, timeout: FREE_SOCKET_MS, ...this.tls });
        // The event stream holds its own connection, outside the pool and its idle timeout.
        this.streamAgent = new Agent({ keepAlive: false, ...this.tls });
    }

    /** Open a request; `onResponse(res)` gets the raw response. Returns the ClientRequest. */
    open(method, path, { query, headers = {}, body, timeoutMs, stream = false } = {}, onResponse, onError) {
        const url = new URL(this.base + path);
        for (const [k, v] of Object.entries(query || {})) {
            if (v !== undefined && v !== null && v !== "") {
                url.searchParams.set(k, String(v));
            }
        }
        const h = { accept: "application/json", ...headers };
        if (this.token) {
            h.authorization = `Bearer ${this.token}`;
        }
        let payload;
        if (body !== undefined) {
            payload = Buffer.from(JSON.stringify(body));
            h["content-type"] = "application/json";
            h["content-length"] = payload.length;
        }
        const mod = this.secure ? https : http;
        const req = mod.request(url, { method, headers: h, agent: stream ? this.streamAgent : this.agent }, onResponse);
        const limit = timeoutMs === undefined ? this.timeoutMs : timeoutMs;
        if (limit > 0) {
            req.setTimeout(limit, () => {
                req.destroy(new GridKeyError(`no answer from ${this.base} within ${limit} ms`, { code: "ETIMEDOUT" }));
            });
        }
        req.on("error", (err) => onError(toGridKeyError(err, this.base)));
        req.end(payload);
        return req;
    }

    /** A JSON request: resolves with the parsed answer (null for 204), rejects with a GridKeyError. */
    request(method, path, opts = {}) {
        return new Promise((resolve, reject) => {
            this.open(
                method,
                path,
                opts,
                (res) => {
                    const chunks = [];
                    let size = 0;
                    res.on("data", (c) => {
                        size += c.length;
                        if (size > MAX_BODY) {
                            res.destroy(new GridKeyError(`answer larger than ${MAX_BODY} bytes`, { code: "E2BIG" }));
                        } else {
                            chunks.push(c);
                        }
                    });
                    res.on("error", (err) => reject(toGridKeyError(err, this.base)));
                    res.on("end", () => {
                        const text = Buffer.concat(chunks).toString("utf8");
                        const type = res.headers["content-type"] || "";
                        if (res.statusCode >= 400) {
                            reject(problemFrom(res.statusCode, type, text));
                        } else if (!text) {
                            resolve(null);
                        } else if (/json/.test(type)) {
                            try {
                                resolve(JSON.parse(text));
                            } catch (_) {
                                reject(new GridKeyError("the sidecar answered malformed JSON", { status: res.statusCode }));
                            }
                        } else {
                            resolve(text);
                        }
                    });
                },
                reject,
            );
        });
    }

    close() {
        this.agent.destroy();
        this.streamAgent.destroy();
    }
}

function toGridKeyError(err, base) {
    if (err instanceof GridKeyError) {
        return err;
    }
    const what = err.code ? `${err.code}` : err.message;
    return new GridKeyError(`cannot reach ${base}: ${what}`, { code: err.code, detail: err.message });
}

/** Encode one path segment (ids are [A-Za-z0-9._:@-], but a message may carry anything). */
function seg(value) {
    return encodeURIComponent(String(value));
}

module.exports = { SidecarClient, GridKeyError, seg };
