// Compile settlement/contracts/*.sol with solc-js and @openzeppelin/contracts from npm.
//
// Usage: node settlement/build.mjs OUT_JSON SOURCE_HASH
// Writes {solc_version, source_hash, contracts: {Name: {abi, bytecode, deployed_bytecode}}}
// atomically to OUT_JSON. The Python loader (settlement/artifacts.py) computes SOURCE_HASH
// and calls this script; run it through `python -m settlement build`.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "..");
const contractsDir = path.join(here, "contracts");
const [outPath, sourceHash] = process.argv.slice(2);
if (!outPath || !sourceHash) {
  console.error("usage: node settlement/build.mjs OUT_JSON SOURCE_HASH");
  process.exit(2);
}

const sources = {};
for (const name of fs.readdirSync(contractsDir).filter((n) => n.endsWith(".sol")).sort()) {
  sources[name] = { content: fs.readFileSync(path.join(contractsDir, name), "utf8") };
}

function findImports(importPath) {
  const candidates = [
    path.join(repoRoot, "node_modules", importPath),
    path.join(contractsDir, importPath),
  ];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 10000 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const message of output.errors || []) console.error(message.formattedMessage);
if (errors.length) process.exit(1);

const contracts = {};
for (const name of Object.keys(sources)) {
  for (const [contractName, compiled] of Object.entries(output.contracts[name] || {})) {
    contracts[contractName] = {
      abi: compiled.abi,
      bytecode: "0x" + compiled.evm.bytecode.object,
      deployed_bytecode: "0x" + compiled.evm.deployedBytecode.object,
    };
  }
}
const artifact = { solc_version: solc.version(), source_hash: sourceHash, contracts };
fs.mkdirSync(path.dirname(outPath), { recursive: true });
const temporary = `${outPath}.${process.pid}.tmp`;
fs.writeFileSync(temporary, JSON.stringify(artifact, null, 1) + "\n");
fs.renameSync(temporary, outPath);
console.log(`compiled ${Object.keys(contracts).join(", ")} with solc ${solc.version()}`);
