#!/usr/bin/env node
// Compile include/contracts/*.sol offline with solc-js (the npm `solc` package, pinned in
// package.json) into include/contracts/build/<Name>.json: abi, bytecode, deployed bytecode,
// the compiler version and settings, and the sha256 of the source file the artifact came from.
//
//   node scripts/build_contracts.mjs           write the artifacts
//   node scripts/build_contracts.mjs --check   exit 1 when an artifact differs from a fresh build
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const sourceDir = join(root, "include", "contracts");
const buildDir = join(sourceDir, "build");
const check = process.argv.includes("--check");

// Fixed settings: the artifacts are reproducible byte for byte from the sources.
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const files = readdirSync(sourceDir).filter((f) => f.endsWith(".sol")).sort();
const sources = {};
const digests = {};
for (const file of files) {
  const content = readFileSync(join(sourceDir, file), "utf8");
  sources[file] = { content };
  digests[file] = createHash("sha256").update(readFileSync(join(sourceDir, file))).digest("hex");
}

const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(2);

mkdirSync(buildDir, { recursive: true });
let stale = 0;
for (const file of files) {
  for (const [name, contract] of Object.entries(output.contracts[file] || {})) {
    const artifact = {
      contractName: name,
      sourceName: `include/contracts/${file}`,
      sourceSha256: digests[file],
      compiler: { name: "solc-js", version: solc.version() },
      settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion },
      abi: contract.abi,
      bytecode: "0x" + contract.evm.bytecode.object,
      deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    };
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const path = join(buildDir, `${name}.json`);
    if (check) {
      if (!existsSync(path) || readFileSync(path, "utf8") !== text) {
        console.error(`stale artifact: ${path}`);
        stale += 1;
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote ${path} (${contract.evm.bytecode.object.length / 2} bytes, solc ${solc.version()})`);
    }
  }
}
process.exit(stale ? 1 : 0);
