// Builds the song view into ONE self-contained HTML file, bygheartd/mcp/ui/song.html, that
// the Python package serves as `ui://bygheartd/song.html`. Run `make mcp-app` (or
// `npm ci && npm run build` here) after changing src/; the output is committed, so nothing
// is built when bygheartd is installed or tested.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "bygheartd", "mcp", "ui", "song.html");

const result = await build({
  entryPoints: [join(here, "src", "song.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "none",
  write: false,
});
// Inline: a `</script` inside the bundle would end the element early.
const script = result.outputFiles[0].text.replace(/<\/script/gi, "<\\/script").trim();
const template = readFileSync(join(here, "src", "song.html"), "utf8");
if (!template.includes("/*BUNDLE*/")) throw new Error("src/song.html has no /*BUNDLE*/ slot");
const html = template.replace("/*BUNDLE*/", () => script);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, html);
console.log(`wrote ${out} (${html.length} bytes)`);
