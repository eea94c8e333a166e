// Drive the Dagster UI as a person would: open an asset, launch one partition from the Materialize dialog,
// wait for the run to succeed, and read the row count the UI shows for that partition.
//
//   node materialize_from_ui.js <base-url> <asset/key/path> <partition> <out-dir> [timeout-seconds]
//
// Prints one JSON line: {runId, runStatus, rowCount, screenshots}. Uses Debian's /usr/bin/chromium
// through playwright-core, so no browser is ever downloaded; every wait is bounded.
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const [base, assetPath, partition, outDir, timeoutArg] = process.argv.slice(2);
if (!base || !assetPath || !partition || !outDir) {
  console.error('usage: node materialize_from_ui.js <base-url> <asset/key/path> <partition> <out-dir> [timeout-s]');
  process.exit(2);
}
const deadline = Date.now() + 1000 * Number(timeoutArg || 240);
const remaining = () => Math.max(1000, deadline - Date.now());

async function shot(page, name, shots) {
  const file = path.join(outDir, name);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
}

// Reload `url` until `check(page)` returns a value: the UI polls on its own, but a reload keeps the
// wait independent of the UI's refresh interval.
async function pollPage(page, url, check, what) {
  let last = null;
  while (Date.now() < deadline) {
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    try {
      const value = await check(page);
      if (value !== null && value !== undefined) return value;
    } catch (e) {
      last = e;
    }
    await page.waitForTimeout(2000);
  }
  throw new Error(`gave up waiting for ${what}` + (last ? `: ${last.message}` : ''));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.ADU_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const shots = [];
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(60000);
  const assetUrl = `${base}/assets/${assetPath}`;
  try {
    await page.goto(assetUrl, { waitUntil: 'domcontentloaded' });
    await page.getByText('Materialize…', { exact: true }).click();
    const dialog = page.getByRole('dialog');
    // The dialog starts on the last 90 days; the demo's partition may be older than that.
    await dialog.getByText('Partition selection').waitFor();
    const showAll = dialog.getByText('Show all partitions');
    if (await showAll.waitFor({ timeout: 10000 }).then(() => true, () => false)) await showAll.click();
    await dialog.getByRole('button', { name: 'Custom' }).click();
    const range = dialog.locator('input[type=text]').first();
    await range.fill(partition);
    await range.press('Enter');
    await dialog.getByText('1 partition', { exact: true }).waitFor();
    await shot(page, 'ui-1-launch-dialog.png', shots);
    await dialog.getByRole('button', { name: 'Launch 1 run' }).click();
    await dialog.waitFor({ state: 'detached', timeout: remaining() });

    // The partition's detail pane names the run that materialized it and the metadata it reported.
    const partitionUrl = `${assetUrl}?view=partitions&partition=${encodeURIComponent(partition)}`;
    const runId = await pollPage(page, partitionUrl, async (p) => {
      await p.getByRole('heading', { name: partition }).or(p.getByText(partition, { exact: true }).first()).waitFor({ timeout: 15000 });
      const hrefs = await p.locator('a[href*="/runs/"]').evaluateAll((els) => els.map((e) => e.getAttribute('href')));
      const ids = hrefs.map((h) => /\/runs\/([0-9a-f-]{36})/.exec(h || '')).filter(Boolean);
      return ids.length ? ids[0][1] : null;
    }, `a materialization of partition ${partition}`);

    const runStatus = await pollPage(page, `${base}/runs/${runId}`, async (p) => {
      const done = p.getByText(/^(Success|Failure|Canceled)$/).first();
      await done.waitFor({ timeout: 15000 });
      return (await done.textContent()).trim();
    }, `run ${runId} to finish`);
    await shot(page, 'ui-2-run.png', shots);

    const rowCount = await pollPage(page, partitionUrl, async (p) => {
      const row = p.locator('tr', { has: p.getByText('dagster/row_count', { exact: true }) }).first();
      await row.waitFor({ timeout: 15000 });
      const cells = await row.locator('td').allInnerTexts();
      return cells.length > 1 ? cells[1].trim() : null;
    }, 'the row count of the partition');
    await shot(page, 'ui-3-partition-row-count.png', shots);

    console.log(JSON.stringify({ runId, runStatus, rowCount, screenshots: shots }));
  } catch (e) {
    await shot(page, 'ui-error.png', shots).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
