"use strict";

/**
 * What the Node-RED flow library's scorecard checks, checked here (its tool needs a catalogue this
 * machine cannot reach), plus the package's own consistency: every message key a node uses exists
 * in its catalogue, every drop-down lists what lib/constants.js lists, and the tarball holds what
 * the nodes need and nothing of the tests.
 */
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const constants = require("../lib/constants");

const ROOT = path.resolve(__dirname, "..");
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
const NODES = pkg["node-red"].nodes;
const CONFIG_NODES = ["gridkey-sidecar"];
const CORE_TYPES_IN_EXAMPLES = new Set(["inject", "debug", "switch", "comment", "catch"]);
const read = (...p) => fs.readFileSync(path.join(ROOT, ...p), "utf8");

function flatten(obj, prefix = "") {
    return Object.entries(obj).flatMap(([k, v]) => (typeof v === "object" ? flatten(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
}

describe("the package", function () {
    it("is named, licensed and declared as the flow library expects", function () {
        assert.match(pkg.name, /^@[a-z0-9-]+\/node-red-[a-z0-9-]+$/);
        assert.equal(pkg.license, "Apache-2.0");
        assert.ok(fs.readFileSync(path.join(ROOT, "LICENSE"), "utf8").includes("Apache License"));
        assert.ok(pkg.repository && pkg.repository.url && pkg.repository.directory === "nodered-nodes");
        assert.ok(pkg.keywords.includes("node-red"));
        assert.equal(pkg["node-red"].version, ">=4.0.0");
        assert.ok(pkg.engines && /^>=\d+/.test(pkg.engines.node));
        assert.ok(Object.keys(pkg.dependencies || {}).length <= 6);
        assert.ok(fs.existsSync(path.join(ROOT, "README.md")));
    });

    it("has, for every node, its .js and .html, help, a message catalogue and the icon", function () {
        for (const [type, file] of Object.entries(NODES)) {
            assert.equal(path.basename(file, ".js"), type, "one file per node, named after it");
            const html = read(file.replace(/\.js$/, ".html"));
            assert.match(html, new RegExp(`data-template-name="${type}"`));
            assert.match(html, new RegExp(`RED\\.nodes\\.registerType\\("${type}"`));
            assert.match(read(file), new RegExp(`RED\\.nodes\\.registerType\\("${type}"`));
            const help = read("nodes/locales/en-US", `${type}.html`);
            assert.match(help, new RegExp(`data-help-name="${type}"`));
            assert.ok(help.replace(/<[^>]+>/g, "").trim().length > 200, `${type}: help text`);
            const catalogue = JSON.parse(read("nodes/locales/en-US", `${type}.json`));
            assert.deepEqual(Object.keys(catalogue), [type]);
            if (!CONFIG_NODES.includes(type)) {
                assert.match(html, /icon: "gridkey\.svg"/);
                assert.match(html, /category: "gridkey"/);
            }
        }
        assert.ok(fs.existsSync(path.join(ROOT, "nodes/icons/gridkey.svg")));
    });

    it("knows every message key its nodes and templates use", function () {
        const catalogues = {};
        for (const type of Object.keys(NODES)) {
            catalogues[type] = new Set(flatten(JSON.parse(read("nodes/locales/en-US", `${type}.json`))));
        }
        const sources = [
            ...Object.values(NODES).flatMap((f) => [f, f.replace(/\.js$/, ".html")]),
            ...fs.readdirSync(path.join(ROOT, "lib")).map((f) => `lib/${f}`),
        ];
        let checked = 0;
        for (const file of sources) {
            const text = read(file);
            const keys = [
                ...[...text.matchAll(/RED\._\(\s*[`"]([^`"$]+)[`"]/g)].map((m) => m[1]),
                ...[...text.matchAll(/RED\._\(\s*`\$\{NS\}:([^`$]+)`/g)].map((m) => m[1]),
                ...[...text.matchAll(/this\._\(\s*i === 0 \? "([^"]+)" : "([^"]+)"/g)].flatMap((m) => [m[1], m[2]]),
                ...[...text.matchAll(/data-i18n="([^"]+)"/g)].map((m) => m[1].replace(/^\[[a-z]+\]/, "")),
            ].filter((k) => !k.startsWith("node-red:"));
            for (const key of keys) {
                const type = key.split(".")[0];
                assert.ok(catalogues[type], `${file}: ${key} names no catalogue`);
                assert.ok(catalogues[type].has(key), `${file}: message key ${key} is missing`);
                checked += 1;
            }
            // status keys built from an operation name: every operation has one
            for (const m of text.matchAll(/RED\._\(`(gridkey-[a-z-]+)\.status\.\$\{req\.op\}`\)/g)) {
                const ops = m[1] === "gridkey-meter" ? constants.METER_OPERATIONS : constants.GROUP_OPERATIONS;
                for (const op of ops) {
                    assert.ok(catalogues[m[1]].has(`${m[1]}.status.${op}`), `${m[1]}.status.${op}`);
                }
            }
        }
        assert.ok(checked > 60, `only ${checked} keys found: the patterns above are stale`);
    });

    it("lists in every drop-down exactly what lib/constants.js lists", function () {
        const values = (html, id) => {
            const block = html.split(`id="${id}"`)[1].split(/<\/select>|<\/div>\s*<\/div>/)[0];
            return [...block.matchAll(/value="([^"]+)"/g)].map((m) => m[1]);
        };
        assert.deepEqual(values(read("nodes/gridkey-meter.html"), "node-input-operation"), ["topic", ...constants.METER_OPERATIONS]);
        assert.deepEqual(values(read("nodes/gridkey-meter.html"), "node-input-reason"), [...constants.REVOCATION_REASONS]);
        assert.deepEqual(values(read("nodes/gridkey-group.html"), "node-input-operation"), ["topic", ...constants.GROUP_OPERATIONS]);
        assert.deepEqual(values(read("nodes/gridkey-key-events.html"), "gridkey-key-events-kinds"), [...constants.KEY_EVENT_KINDS]);
    });

    it("has one example per node, each with a comment, and no third-party nodes", function () {
        const examples = fs.readdirSync(path.join(ROOT, "examples")).filter((f) => f.endsWith(".json"));
        const covered = new Set();
        for (const f of examples) {
            const flow = JSON.parse(read("examples", f));
            assert.ok(flow.some((n) => n.type === "comment" && n.info), `${f}: a comment node that explains it`);
            for (const n of flow) {
                assert.ok(NODES[n.type] || CORE_TYPES_IN_EXAMPLES.has(n.type), `${f}: ${n.type}`);
                if (NODES[n.type] && !CONFIG_NODES.includes(n.type)) {
                    covered.add(n.type);
                }
                assert.equal("credentials" in n || "token" in n, false, `${f}: no credentials in an example`);
            }
        }
        assert.deepEqual([...covered].sort(), Object.keys(NODES).filter((t) => !CONFIG_NODES.includes(t)).sort());
        for (const name of ["Rekey on tamper alarm", "Watch key versions", "Revoke a meter", "Send a demand-response command", "Forward readings"]) {
            assert.ok(examples.includes(`${name}.json`), name);
        }
    });

    it("packs the nodes, their locales, icon, lib and examples, and none of the tests", function () {
        const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"], { cwd: ROOT, encoding: "utf8" });
        const files = JSON.parse(out)[0].files.map((f) => f.path);
        for (const [type, file] of Object.entries(NODES)) {
            for (const f of [file, file.replace(/\.js$/, ".html"), `nodes/locales/en-US/${type}.html`, `nodes/locales/en-US/${type}.json`]) {
                assert.ok(files.includes(f), f);
            }
        }
        for (const f of ["nodes/icons/gridkey.svg", "LICENSE", "README.md", "package.json", ...fs.readdirSync(path.join(ROOT, "lib")).map((x) => `lib/${x}`)]) {
            assert.ok(files.includes(f), f);
        }
        assert.equal(files.filter((f) => f.startsWith("examples/")).length, fs.readdirSync(path.join(ROOT, "examples")).length);
        assert.deepEqual(files.filter((f) => f.startsWith("test/") || f.includes("node_modules")), []);
    });
});
