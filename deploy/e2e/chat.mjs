// The support chat page in headless Chromium against a running control plane and the real
// demo agent: sign in, ask for a task, see it proposed as a card, confirm it, and watch its
// progress events arrive until it succeeds; then reload and find the conversation stored.
// Takes a screenshot. Prints one JSON line; exits non-zero on any failure.
//
//   node chat.mjs <base-url> <email> <password> <screenshot.png>
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const [url, email, password, screenshot] = process.argv.slice(2);
if (!url || !email || !password || !screenshot) {
  console.error("usage: node chat.mjs <base-url> <email> <password> <screenshot.png>");
  process.exit(2);
}
const request = "Please add a DNS record printer.home pointing to 192.168.1.50";
const started = Date.now();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Root in CI needs --no-sandbox; the rest keeps Chromium off the (closed) network.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const problems = [];
try {
  // The quickstart's HTTPS certificate is signed by its own development CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 960, height: 1100 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`); });
  page.setDefaultTimeout(30_000);

  await page.goto(`${url}/support`);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("#signin-button");
  await page.waitForSelector("#chat:not(.hidden)");

  // A question: answered from the knowledge base, no task proposed.
  await page.fill("#text", "How do I open my shares from a Mac?");
  await page.click("#send");
  await page.locator(".msg.assistant[data-seq='2']").waitFor();
  if ((await page.locator(".proposal").count()) !== 0) throw new Error("a question got a task proposal");

  await page.fill("#text", request);
  await page.click("#send");
  const pending = page.locator('.proposal[data-status="pending"]').last();
  await pending.waitFor();
  const card = page.locator(`.proposal[data-id="${await pending.getAttribute("data-id")}"]`);
  // The card says what will happen in words; the action id and parameters are one click away.
  const title = await card.locator("h3").innerText();
  if (!title.includes("printer.home") || !title.includes("192.168.1.50")) {
    throw new Error(`unexpected proposal: ${title}`);
  }
  await card.locator("details.technical summary").click();
  const params = await card.locator("table.params").innerText();
  if (!params.includes("dns.record.add") || !params.includes("printer.home") || !params.includes("192.168.1.50")) {
    throw new Error(`unexpected technical details: ${params}`);
  }
  if ((await page.locator(".task").count()) !== 0) throw new Error("a task started before confirmation");

  await card.locator("button.confirm").click();
  const status = card.locator(".task-status");
  await status.waitFor();
  await card.locator(".task-status.succeeded").waitFor({ timeout: 120_000 });
  const events = await card.locator(".task-events li").count();
  const counted = Number(await card.locator(".task-count").innerText());
  if (counted !== events) throw new Error(`the log says ${counted} events but shows ${events}`);
  if (events < 2) throw new Error(`only ${events} progress events shown`);
  const proposalStatus = await card.locator(".proposal-status").innerText();
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  // Stored: a reload shows the same conversation, its card confirmed and its task done.
  await page.reload();
  await page.waitForSelector("#chat:not(.hidden)");
  await page.locator(".proposal .task-status.succeeded").last().waitFor();
  const customerMessages = await page.locator(".msg.customer").count();
  if (customerMessages < 1) throw new Error("the conversation was not stored");
  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify({
    test: "support-chat", ok: true, proposal_status: proposalStatus, task_status: "succeeded",
    progress_events: events, elapsed_ms: Date.now() - started, screenshot,
  }));
} catch (e) {
  console.log(JSON.stringify({ test: "support-chat", ok: false, error: String(e.message || e), problems }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
