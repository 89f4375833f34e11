// Drives `irtdb serve`'s page in headless Chromium (Debian's, through playwright-core) for
// tests/it/serve.rs: upload an image, read the result grid, click a result, use the keyboard,
// open the duplicates and collection views, and check the layout at phone width.
// Usage: node page.mjs URL QUERY_IMAGE CHROMIUM SCREENSHOT_DIR   → one JSON object on stdout.
import { chromium } from "playwright-core";

const [url, queryImage, executablePath, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { console_errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("pageerror", (e) => out.console_errors.push(String(e)));
  // Nothing but this server may be asked for anything (no CDN, works offline).
  page.on("request", (r) => {
    if (!r.url().startsWith(url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) {
      out.console_errors.push("request outside the server: " + r.url());
    }
  });
  await page.goto(url);
  const grid = async () => page.$$eval("#results li", (lis) => lis.map((li) => Number(li.dataset.id)));
  const waitGrid = async (before) => {
    await page.waitForFunction((b) => {
      const ids = [...document.querySelectorAll("#results li")].map((li) => li.dataset.id).join(",");
      return ids.length > 0 && ids !== b && !document.getElementById("status").textContent.includes("…");
    }, before, { timeout: 30000 });
  };

  await page.setInputFiles("#file", queryImage);
  await waitGrid("");
  out.upload = await grid();
  await page.waitForFunction(() => [...document.querySelectorAll("#results img")].every((i) => i.complete), null, { timeout: 30000 });
  out.thumbnails_loaded = await page.$$eval("#results img", (imgs) => imgs.filter((i) => i.naturalWidth > 0).length);
  await page.screenshot({ path: shots + "/results.png", fullPage: true });

  // Click the first result: search by it.
  const settled = () => page.waitForFunction(() => /results \(/.test(document.getElementById("status").textContent), null, { timeout: 30000 });
  await page.evaluate(() => { document.getElementById("status").textContent = ""; });
  await page.click("#results li:first-child button");
  await settled();
  out.clicked = await grid();

  // Keyboard: the first result has the focus after a search; Enter searches by it.
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.closest("li") ? document.activeElement.closest("li").dataset.id : null);
  out.focused_first = focused !== null && Number(focused) === out.clicked[0];
  await page.evaluate(() => { document.getElementById("status").textContent = ""; });
  await page.keyboard.press("Enter");
  await settled();
  out.keyboard = await grid();

  // Duplicates view.
  await page.click("#tab-dups");
  await page.waitForFunction(() => /groups/.test(document.getElementById("dups-status").textContent), null, { timeout: 30000 });
  out.groups = await page.$$eval("#groups .group", (gs) => gs.map((g) => [...g.querySelectorAll("li")].map((li) => Number(li.dataset.id))));
  await page.screenshot({ path: shots + "/dups.png", fullPage: true });

  // Collection info.
  await page.keyboard.press("Tab");
  await page.click("#tab-info");
  await page.waitForFunction(() => document.querySelectorAll("#info dt").length > 0, null, { timeout: 30000 });
  out.info_text = await page.$eval("#info", (d) => d.textContent);

  // Phone width: results in two columns, nothing wider than the screen.
  const phone = await browser.newPage({ viewport: { width: 375, height: 740 }, isMobile: true });
  await phone.goto(url);
  await phone.setInputFiles("#file", queryImage);
  await phone.waitForFunction(() => document.querySelectorAll("#results li").length > 0, null, { timeout: 30000 });
  out.phone_overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await phone.screenshot({ path: shots + "/phone.png", fullPage: false });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
