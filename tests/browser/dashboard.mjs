// Drives the dashboard of a running 3-node cluster in headless Chromium (Debian's package) with
// Playwright. Usage: node dashboard.mjs URL TOKEN GPUS SCREENSHOT_DIR
// Checks: without a token and with a wrong one the page says so clearly; with the token the fleet
// table lists every GPU of the CSV; a click on a GPU opens charts with data points; the cluster
// view shows 3 members up; the workloads view lists namespaces and pods with charts by
// namespace, a pod's page lists its GPUs with charts, and a GPU's page draws the pod on its
// workload timeline. Screenshots of each view go to SCREENSHOT_DIR.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, token, gpus, shots] = process.argv.slice(2);
const expectGpus = Number(gpus);
mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error("FAILED: " + what);
  console.log("ok: " + what);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url + "/");
  const error = page.locator("#error");
  await error.waitFor({ state: "visible" });
  check((await error.textContent()).includes("requires an API token"), "no token: the page asks for one");

  await page.fill("#token", "not-the-token");
  await page.click("#token-form button");
  await page.waitForFunction(() => document.getElementById("error").textContent.includes("was refused"));
  check(true, "wrong token: the page says it was refused");
  await page.screenshot({ path: `${shots}/wrong-token.png` });

  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForFunction((n) => document.querySelectorAll("#fleet tbody tr").length === n, expectGpus, { timeout: 20000 });
  check(await error.isHidden(), "right token: the error is gone");
  const rows = await page.locator("#fleet tbody tr").count();
  check(rows === expectGpus, `fleet table lists all ${expectGpus} GPUs (${rows})`);
  const temps = await page.locator("#fleet tbody tr td:nth-child(5)").allTextContents();
  check(temps.filter((t) => t !== "–").length === expectGpus, "every GPU shows its latest temperature");
  // Sorting by temperature puts the hottest first.
  await page.click('th[data-key="DCGM_FI_DEV_GPU_TEMP"]');
  await page.waitForSelector('th[data-key="DCGM_FI_DEV_GPU_TEMP"].sorted.asc');
  await page.click('th[data-key="DCGM_FI_DEV_GPU_TEMP"]');
  await page.waitForSelector('th[data-key="DCGM_FI_DEV_GPU_TEMP"].sorted:not(.asc)');
  const sorted = (await page.locator("#fleet tbody tr td:nth-child(5)").allTextContents()).map(Number);
  check(sorted.every((v, i) => i === 0 || sorted[i - 1] >= v), "sorting by temperature (descending)");
  // Filtering by a host keeps only its GPUs.
  const host = await page.locator("#fleet tbody tr td:nth-child(1)").first().textContent();
  await page.fill("#fleet-filter", host);
  await page.waitForFunction((h) => [...document.querySelectorAll("#fleet tbody tr td:nth-child(1)")].every((td) => td.textContent === h), host);
  check((await page.locator("#fleet tbody tr").count()) >= 1, `filter by host ${host}`);
  await page.fill("#fleet-filter", "");
  await page.waitForFunction((n) => document.querySelectorAll("#fleet tbody tr").length === n, expectGpus);
  await page.screenshot({ path: `${shots}/fleet.png` });

  await page.locator("#fleet tbody tr").first().click();
  await page.waitForSelector(".chart[data-metric]", { timeout: 20000 });
  const points = await page.$$eval(".chart[data-metric]", (els) => els.map((e) => Number(e.dataset.points)));
  check(points.length >= 1 && points.every((p) => p > 0), `charts with data points (${points.join(", ")})`);
  check((await page.locator(".chart canvas").count()) === points.length, "each chart is drawn");
  await page.click('button[data-range="5m"]');
  await page.waitForSelector('button[data-range="5m"].active');
  await page.waitForSelector(".chart[data-metric]");
  await page.screenshot({ path: `${shots}/gpu.png` });

  await page.click("#nav-cluster");
  await page.waitForSelector("#cluster-members tbody tr");
  const members = await page.$$eval("#cluster-members tbody tr", (trs) => trs.map((tr) => tr.children[1].textContent));
  check(members.length === 3 && members.every((s) => s === "up"), `cluster view: 3 members up (${members.join(", ")})`);
  await page.screenshot({ path: `${shots}/cluster.png` });

  await page.click("#nav-workloads");
  await page.waitForSelector("#pods tbody tr", { timeout: 20000 });
  const namespaces = await page.locator("#namespaces tbody tr").count();
  const pods = await page.locator("#pods tbody tr").count();
  check(namespaces >= 1 && pods >= 2, `workloads view: ${namespaces} namespaces, ${pods} pods`);
  for (const id of ["chart-util", "chart-power"]) {
    const n = Number(await page.getAttribute(`#${id}`, "data-series"));
    check(n === namespaces && (await page.locator(`#${id} canvas`).count()) === 1, `${id}: one line per namespace (${n})`);
  }
  await page.screenshot({ path: `${shots}/workloads.png` });

  const podRow = page.locator("#pods tbody tr").first();
  const podName = (await podRow.getAttribute("data-workload")).split("/")[1];
  const podGpus = Number(await podRow.locator("td:nth-child(2)").textContent());
  await podRow.click();
  await page.waitForSelector("#workload-gpus tbody tr", { timeout: 20000 });
  check((await page.locator("#workload-gpus tbody tr").count()) === podGpus, `pod ${podName}: its ${podGpus} GPUs listed`);
  check((await page.textContent("#workload-summary")).startsWith(`${podGpus} GPUs`), "pod summary");
  const lines = Number(await page.getAttribute("#chart-util", "data-series"));
  check(lines === podGpus, `pod utilisation chart: one line per GPU (${lines})`);
  await page.screenshot({ path: `${shots}/workload.png` });

  await page.locator("#workload-gpus tbody tr").first().click();
  await page.waitForSelector("#timeline", { timeout: 20000 });
  const held = await page.$$eval("#timeline .span", (els) => els.map((e) => e.dataset.pod));
  check(held.includes(podName), `GPU timeline shows ${podName} among ${held.length} spans`);
  // Over the hour the GPU ran several pods, one after another.
  await page.click('button[data-range="1h"]');
  await page.waitForSelector('button[data-range="1h"].active');
  await page.waitForFunction(() => document.querySelectorAll("#timeline .span").length >= 2, null, { timeout: 20000 });
  const hour = await page.$$eval("#timeline .span", (els) => els.map((e) => e.dataset.pod));
  check(new Set(hour).size >= 2, `over the hour: ${hour.join(", ")}`);
  await page.screenshot({ path: `${shots}/gpu-timeline.png` });
} finally {
  await browser.close();
}
