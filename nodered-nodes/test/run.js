/**
 * Runs the mocha suite and ends with one plain line CI can read: "N passed, N failed".
 * A pending (skipped) test counts as failed: nothing here is allowed to be skipped.
 */
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const Mocha = require("mocha");

const mocha = new Mocha({ reporter: "spec", timeout: 60000, slow: 5000 });
const filter = process.argv[2];
for (const f of fs.readdirSync(__dirname).sort()) {
    if (f.endsWith("_spec.js") && (!filter || f.includes(filter))) {
        mocha.addFile(path.join(__dirname, f));
    }
}
let runner;
try {
    runner = mocha.run((failures) => {
        const s = runner.stats;
        const failed = s.failures + s.pending;
        const runtime = require("./support/nodered").runtimeVersion();
        console.log(`Node-RED ${runtime} on Node ${process.versions.node}`);
        console.log(`${s.passes} passed, ${failed} failed`);
        process.exitCode = failures || s.pending ? 1 : 0;
    });
} catch (err) {
    // a spec that cannot even load still ends with the line CI reads
    console.error(err);
    console.log("0 passed, 1 failed");
    process.exitCode = 1;
}
