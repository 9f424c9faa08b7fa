/**
 * Reading a node's inputs: its own setting first, then the message; ids checked before they go
 * into a URL path (encodeURIComponent leaves "." and "..", which URL parsing then resolves, so an
 * unchecked id could reach another endpoint).
 */
"use strict";

const { ID_RE } = require("./constants");

const NS = "@gridkey/node-red-gridkey/gridkey-sidecar"; // shared messages live in the config node's catalogue

/** A string from the node's own setting, else from the message; "" when neither has one. */
function pick(configValue, ...candidates) {
    if (typeof configValue === "string" && configValue.trim()) {
        return configValue.trim();
    }
    for (const c of candidates) {
        if (typeof c === "string" && c.trim()) {
            return c.trim();
        }
    }
    return "";
}

/** `value` if it is a valid id; throws `missing` (a message) when empty, a clear error when malformed. */
function checkId(RED, value, missing) {
    if (!value) {
        throw new Error(missing);
    }
    if (!ID_RE.test(value)) {
        throw new Error(RED._(`${NS}:gridkey-sidecar.errors.bad-id`, { id: String(value).slice(0, 80) }));
    }
    return value;
}

module.exports = { pick, checkId };
