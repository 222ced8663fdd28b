// Builds the browser tests' MCP Apps host (test-host/host.js: the official TypeScript client
// plus ext-apps' AppBridge) into ONE file, test-host/host.bundle.js, which is committed so
// that the tests build nothing. Run `npm run build:host` here after changing test-host/host.js.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "test-host", "host.bundle.js");

const result = await build({
  entryPoints: [join(here, "test-host", "host.js")],
  bundle: true,
  minify: true,
  platform: "browser",
  format: "iife",
  target: "es2022",
  legalComments: "none",
  write: false,
});
const banner =
  "// Built by mcp-app/build-host.mjs from mcp-app/test-host/host.js: do not edit.\n";
writeFileSync(out, banner + result.outputFiles[0].text);
console.log(`wrote ${out} (${result.outputFiles[0].text.length} bytes)`);
