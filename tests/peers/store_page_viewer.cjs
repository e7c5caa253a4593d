// Drives the live page of `iotload plotter --ui ADDR` (fed from a results store) in
// headless Chromium with playwright-core while a run is recorded into that store.
// Prints `waiting` on a line of its own once the page waits for a run (the test then
// starts one), and at the end what it saw as one JSON object on a line.
//
// usage: node store_page_viewer.cjs URL TOPICS (the topics the run will have)
// env:   PLAYWRIGHT_CORE (the playwright-core package directory), CHROMIUM (the browser)
"use strict";

const { chromium } = require(process.env.PLAYWRIGHT_CORE);

async function main() {
  const url = process.argv[2];
  const topics = Number(process.argv[3]);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const seen = { console: [], requests: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") seen.console.push(m.type() + ": " + m.text());
    });
    page.on("pageerror", (e) => seen.console.push("uncaught: " + e.message));
    page.on("request", (r) => {
      if (!r.url().startsWith(url.replace(/\/$/, ""))) seen.requests.push(r.url());
    });
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.state === "waiting", null, { timeout: 20000 });
    seen.waiting_status = await page.textContent("#status");
    process.stdout.write("waiting\n");
    // The run starts: the page follows it second by second.
    await page.waitForFunction(() => document.body.dataset.state === "live", null, { timeout: 30000 });
    seen.recording_status = await page.textContent("#status");
    seen.run_id = await page.evaluate(() => window.iotloadPage.info.run_id);
    await page.waitForFunction(() => window.iotloadPage.points() >= 2, null, { timeout: 20000 });
    seen.points_early = await page.evaluate(() => window.iotloadPage.points());
    await page.waitForFunction((n) => window.iotloadPage.points() > n, seen.points_early, { timeout: 20000 });
    seen.points_later = await page.evaluate(() => window.iotloadPage.points());
    seen.state_later = await page.evaluate(() => document.body.dataset.state);
    seen.canvases = await page.locator(".uplot canvas").count();
    await page.click("#topics summary");
    await page.waitForFunction(() => document.querySelectorAll("#topic-rows tr").length > 0, null, { timeout: 20000 });
    // The run ends: the stored numbers are final.
    await page.waitForFunction(() => document.body.dataset.state === "ended", null, { timeout: 60000 });
    seen.status = await page.textContent("#status");
    seen.tiles = {};
    for (const id of ["sent", "received", "lost", "duplicates", "reordered", "p50", "p99", "max"]) {
      seen.tiles[id] = await page.textContent("#tile-" + id);
    }
    seen.device_tiles_shown = await page.locator("#tile-connected").isVisible();
    seen.points_final = await page.evaluate(() => window.iotloadPage.points());
    // Per-topic rows: one per device of the run.
    await page.waitForFunction((n) => document.querySelectorAll("#topic-rows tr").length >= n, topics, { timeout: 20000 });
    seen.topic_rows = await page.$$eval("#topic-rows tr", (rows) => rows.map((r) => r.cells[0].textContent));
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
