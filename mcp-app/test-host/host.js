// A real MCP Apps host for the browser tests: the official TypeScript client talks to the
// bygheartd server over streamable HTTP, calls one tool, and either renders the tool's view
// through ext-apps' AppBridge in a sandboxed iframe (a client with the Apps extension) or
// shows the result's text (a client without it), the way a chat client would.
//
// Built once into host.bundle.js (`npm run build:host`), which is committed: the tests serve
// that file to Chromium on loopback next to a page carrying the configuration as JSON in
// <script id="host-config">: {mcpUrl (may be relative), token, tool, arguments, apps}.
// Nothing else is loaded.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import {
  AppBridge,
  PostMessageTransport,
  RESOURCE_MIME_TYPE,
  getToolUiResourceUri,
} from "@modelcontextprotocol/ext-apps/app-bridge";

// The extension's id, as the spec names it (ext-apps exports it only from its server entry).
const EXTENSION_ID = "io.modelcontextprotocol/ui";
const HOST_INFO = { name: "bygheartd-test-host", version: "1" };

// What the test reads back: how far the host got, and why it stopped if it failed.
const state = { phase: "starting", error: null, viewEvents: [], viewRequests: [] };
window.testHost = state;

function phase(name) {
  state.phase = name;
  document.body.dataset.phase = name;
}

function show(id, text) {
  const element = document.createElement("pre");
  element.id = id;
  element.textContent = text; // text from the server is data: never parsed as HTML
  document.body.append(element);
}

async function connect(config) {
  const capabilities = config.apps
    ? { extensions: { [EXTENSION_ID]: { mimeTypes: [RESOURCE_MIME_TYPE] } } }
    : {};
  const client = new Client(HOST_INFO, { capabilities });
  const transport = new StreamableHTTPClientTransport(new URL(config.mcpUrl, location.href), {
    requestInit: { headers: { Authorization: `Bearer ${config.token}` } },
  });
  await client.connect(transport);
  return client;
}

// The view for a tool, if the tool names one and the host renders views; else null.
async function viewHtml(client, config) {
  if (!config.apps) return null;
  const { tools } = await client.listTools();
  const tool = tools.find((t) => t.name === config.tool);
  if (!tool) throw new Error(`the server has no tool ${config.tool}`);
  const uri = getToolUiResourceUri(tool);
  if (!uri) return null;
  const read = await client.readResource({ uri });
  const content = read.contents.find((c) => c.mimeType === RESOURCE_MIME_TYPE && "text" in c);
  if (!content) throw new Error(`${uri} is not a ${RESOURCE_MIME_TYPE} resource`);
  return content.text;
}

async function render(client, config, html, result) {
  const frame = document.createElement("iframe");
  frame.id = "view";
  frame.setAttribute("sandbox", "allow-scripts"); // an opaque origin: no cookies, no parent DOM
  frame.style.width = "700px";
  frame.style.height = "900px";
  document.body.append(frame);
  const bridge = new AppBridge(
    client,
    HOST_INFO,
    { serverTools: {}, serverResources: {}, logging: {} },
    { hostContext: { theme: "light", displayMode: "inline" } },
  );
  bridge.oninitialized = async () => {
    state.viewEvents.push("initialized");
    await bridge.sendToolInput({ arguments: config.arguments });
    await bridge.sendToolResult(result);
    phase("shown");
  };
  bridge.onsizechange = ({ height }) => {
    if (height) frame.style.height = `${Math.ceil(height)}px`;
  };
  // Listen before the view's first message can arrive.
  await bridge.connect(new PostMessageTransport(frame.contentWindow, frame.contentWindow));
  // The bridge forwards the view's server requests through the client; note each one, as a
  // host showing "the app called get_song" would, and pass it on unchanged.
  const callTool = bridge.oncalltool;
  bridge.oncalltool = (params, extra) => {
    state.viewRequests.push(params.name);
    return callTool(params, extra);
  };
  const readResource = bridge.onreadresource;
  bridge.onreadresource = (params, extra) => {
    state.viewRequests.push(`read ${params.uri}`);
    return readResource(params, extra);
  };
  frame.srcdoc = html;
}

async function main() {
  const config = JSON.parse(document.getElementById("host-config").textContent);
  const client = await connect(config);
  phase("connected");
  const html = await viewHtml(client, config);
  const result = await client.callTool({ name: config.tool, arguments: config.arguments });
  if (html === null) {
    // A client without Apps shows the text the tool gave the model.
    const text = result.content.filter((c) => c.type === "text").map((c) => c.text);
    show("text", text.join("\n\n"));
    document.body.dataset.error = result.isError ? "true" : "false";
    phase("shown");
    return;
  }
  await render(client, config, html, result);
}

main().catch((err) => {
  phase("failed");
  state.error = String(err && err.stack ? err.stack : err);
  show("host-error", state.error);
});
