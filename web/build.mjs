// Build the trading page: bundle web/src into web/dist (or --outdir DIR).
//
//   npm run build:web              # writes web/dist
//   node web/build.mjs --outdir D  # writes D (the e2e test compares it with web/dist)
//
// The output is deterministic (no timestamps, no hashes of absolute paths), so a rebuild
// of unchanged sources gives the same bytes and the committed web/dist can be checked.

import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const source = path.join(here, "src");
const flag = process.argv.indexOf("--outdir");
const outdir = flag > 0 ? path.resolve(process.argv[flag + 1]) : path.join(here, "dist");
const STATIC_FILES = ["index.html", "favicon.svg"];

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
const result = await build({
  entryPoints: { app: path.join(source, "main.js"), style: path.join(source, "styles.css") },
  outdir,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  legalComments: "eof",
  charset: "utf8",
  sourcemap: false,
  logLevel: "warning",
  absWorkingDir: here,
  define: { "process.env.NODE_ENV": '"production"' },
});
if (result.errors.length) process.exit(1);
for (const name of STATIC_FILES) await copyFile(path.join(source, name), path.join(outdir, name));
const written = (await readdir(outdir)).sort();
console.log(`web: built ${written.join(", ")} into ${path.relative(process.cwd(), outdir) || "."}`);
