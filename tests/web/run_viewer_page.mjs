// Drives tests/web/viewer_page.html in headless Chromium (playwright-core, system chromium).
// Usage: node run_viewer_page.mjs <config.json>
// config: {chromium, frontendDir, baseUrl, outDir, background, scenarios: [{name, load, mode, editBoxes, settleMs}],\n//          extension: {output} (optional: ui output passed to the extension's onExecuted)}
// Prints one JSON line: {ok, results: [{name, screenshot, effectiveMode, ms}], consoleErrors, pageErrors}.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.resolve(config.frontendDir, "package.json"));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: config.chromium,
  headless: true,
  args: ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
    "--enable-webgl", "--no-sandbox", "--disable-dev-shm-usage"],
});
const consoleErrors = [];
const pageErrors = [];
const consoleAll = [];
const results = [];
let ok = true;
try {
  const page = await browser.newPage({ viewport: { width: 700, height: 540 } });
  page.on("console", (m) => {
    consoleAll.push(`${m.type()}: ${m.text()}`);
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("response", (r) => { if (r.status() >= 400) consoleErrors.push(`HTTP ${r.status()}: ${r.url()}`); });
  page.on("pageerror", (e) => pageErrors.push(String(e && e.stack || e)));
  page.on("requestfailed", (r) => consoleErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(`${config.baseUrl}/tests/web/viewer_page.html?bg=${encodeURIComponent(config.background)}`);
  await page.waitForFunction(() => window.viewerReady === true, null, { timeout: 20000 });
  const view = page.locator("#view");
  for (const sc of config.scenarios) {
    const t0 = Date.now();
    const effectiveMode = await page.evaluate(async (sc) => {
      const v = window.viewer;
      if (sc.load) await v.load(sc.load);
      if (sc.mode) v.setMode(sc.mode);
      v.setEditBoxes(sc.editBoxes || []);
      v.render();
      // let Spark's asynchronous sort finish and a few frames land
      await new Promise((r) => setTimeout(r, sc.settleMs ?? 600));
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return v.effectiveMode;
    }, sc);
    const file = path.join(config.outDir, `${sc.name}.png`);
    await view.screenshot({ path: file });
    results.push({ name: sc.name, screenshot: file, effectiveMode, ms: Date.now() - t0 });
  }
  await page.evaluate(() => window.viewer.dispose());
  if (config.extension) {
    // The ComfyUI extension (web/js/trellis_preview.js) with a stand-in app and node.
    const t0 = Date.now();
    await page.goto(`${config.baseUrl}/tests/web/extension_page.html`);
    await page.waitForFunction(() => window.extensionReady === true, null, { timeout: 20000 });
    const info = await page.evaluate((o) => window.runExtension(o), config.extension.output);
    const file = path.join(config.outDir, "extension.png");
    await page.locator(".trellis-preview > div:nth-child(2)").screenshot({ path: file });
    results.push({ name: "extension", screenshot: file, effectiveMode: info.mode, status: info.status,
                   foreignWidgets: info.foreignWidgets, configuredSize: info.configuredSize, ms: Date.now() - t0 });
    await page.evaluate(() => window.__node.onRemoved());
  }
} catch (e) {
  ok = false;
  pageErrors.push(`driver: ${e && e.stack || e}`);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ ok, results, consoleErrors, pageErrors, console: consoleAll }) + "\n");
