// Drives the live page of a running `iotload ... --ui ADDR` in headless Chromium with
// playwright-core, and prints what it saw as one JSON object on stdout.
//
// usage: node live_page_viewer.cjs URL
// env:   PLAYWRIGHT_CORE (the playwright-core package directory), CHROMIUM (the browser)
"use strict";

const { chromium } = require(process.env.PLAYWRIGHT_CORE);

async function main() {
  const url = process.argv[2];
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
    // Offline: every request must go to the page's own server.
    page.on("request", (r) => {
      if (!r.url().startsWith(url.replace(/\/$/, ""))) seen.requests.push(r.url());
    });
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.state === "live");
    // The charts update: wait for two samples, then for more.
    await page.waitForFunction(() => window.iotloadPage.points() >= 2, null, { timeout: 20000 });
    seen.points_early = await page.evaluate(() => window.iotloadPage.points());
    seen.received_early = await page.textContent("#tile-received");
    await page.waitForFunction((n) => window.iotloadPage.points() > n, seen.points_early, { timeout: 20000 });
    seen.points_later = await page.evaluate(() => window.iotloadPage.points());
    seen.received_later = await page.textContent("#tile-received");
    seen.canvases = await page.locator(".uplot canvas").count();
    // Per-topic detail on demand.
    await page.click("#topics summary");
    // Generous: on a loaded machine the click may come late, even after the run ended
    // (the final topic rows are kept for the page).
    await page.waitForFunction(() => document.querySelectorAll("#topic-rows tr").length > 0, null, { timeout: 60000 });
    seen.topic_rows = await page.locator("#topic-rows tr").count();
    // The run ends: the page shows the final summary.
    await page.waitForFunction(() => document.body.dataset.state === "finished", null, { timeout: 60000 });
    seen.status = await page.textContent("#status");
    seen.tiles = {};
    for (const id of ["sent", "received", "lost", "duplicates", "reordered", "p50", "p99", "max", "connected"]) {
      seen.tiles[id] = await page.textContent("#tile-" + id);
    }
    seen.thresholds = await page.$$eval("#thresholds tbody tr", (rows) =>
      rows.map((r) => ({ threshold: r.cells[0].textContent, passed: r.dataset.passed })),
    );
    seen.points_final = await page.evaluate(() => window.iotloadPage.points());
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
