/**
 * One REST call per message, as the meter, group and command nodes make it: build the request
 * from the message (an error there is the flow's), show it under way, call the sidecar, check the
 * answer has the shape the node promises on msg.payload, show the outcome, send. Every failure,
 * including an answer of the wrong shape, reaches a Catch node and never escapes the handler
 * (an exception thrown after an await would otherwise be an unhandled rejection in Node-RED).
 */
"use strict";

const { fail } = require("./status");

/**
 * @param {object} node      the Node-RED node
 * @param {object} sidecar   its gridkey-sidecar config node
 * @param {object} how       {build(msg) -> {method, path, opts, ...}, busy(req) -> text,
 *                            accept(req, answer) -> bool, badAnswer -> text, outcome(req, answer) -> status}
 */
function handleWith(node, sidecar, how) {
    return async function (msg, send, done) {
        let req;
        try {
            req = how.build(msg);
        } catch (err) {
            fail(node, msg, err, done);
            return;
        }
        node.status({ fill: "blue", shape: "dot", text: how.busy(req) });
        try {
            const answer = await sidecar.request(req.method, req.path, req.opts);
            if (!how.accept(req, answer)) {
                throw new Error(how.badAnswer);
            }
            msg.payload = answer;
            node.status(how.outcome(req, answer));
        } catch (err) {
            fail(node, msg, err, done);
            return;
        }
        send(msg);
        done();
    };
}

module.exports = { handleWith };
