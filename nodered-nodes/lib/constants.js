/**
 * Facts the nodes share with each other and with the sidecar's API (docs/api.md). The editor
 * files (.html) list the same choices for their drop-downs; test/package_spec.js checks that they
 * match this file, so there is one list to change.
 */
"use strict";

/** Event kinds a flow can subscribe to (GET /v1/events); protocol-internal ones are left out. */
const KEY_EVENT_KINDS = Object.freeze([
    "epoch.committed",
    "member.added",
    "member.removed",
    "member.refused",
    "member.skipped",
    "meter.enrolled",
    "meter.revoked",
    "meter.rotate_requested",
    "group.created",
    "group.updated",
    "rekey.requested",
    "session.started",
    "session.aborted",
    "session.failed",
    "session.idle",
]);

const METER_OPERATIONS = Object.freeze(["list", "get", "enrol", "revoke"]);
const GROUP_OPERATIONS = Object.freeze([
    "create",
    "get",
    "list",
    "add-members",
    "remove-member",
    "set-interval",
    "set-roster",
    "epochs",
]);

/** RFC 5280 CRLReason names the sidecar accepts for a revocation. */
const REVOCATION_REASONS = Object.freeze([
    "keyCompromise",
    "unspecified",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]);

/** Ids as the sidecar accepts them (docs/api.md, "Conventions"). */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;

const DEFAULTS = Object.freeze({
    timeoutMs: 10000, // one REST request
    rekeyWaitS: 60, // how long gridkey rekey waits for the epoch to commit
    readingWaitS: 2, // how long gridkey readings waits for the controller's decrypted value
});

module.exports = { KEY_EVENT_KINDS, METER_OPERATIONS, GROUP_OPERATIONS, REVOCATION_REASONS, ID_RE, DEFAULTS };
