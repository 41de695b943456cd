// Browser test of the shop front: headless Debian Chromium driven by
// playwright-core against a running gateway (SHOP_URL). Creates an account,
// tops up 5.00, orders 2.00 (FINISHED without a reload, balance 3.00), orders
// 10.00 (CANCELLED, insufficient funds), refunds the 2.00 (REFUNDED, balance
// 5.00), cancels an order while payments is held back (SIGSTOP of
// SHOP_PAYMENTS_PID: CANCELLED by the user, nothing charged), checks an
// invalid amount's error, the 375 px layout and keyboard use, and saves
// screenshots for a person.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.env.SHOP_URL;
assert.ok(base, "SHOP_URL must point at the gateway");
const paymentsPid = Number(process.env.SHOP_PAYMENTS_PID);
assert.ok(paymentsPid > 0, "SHOP_PAYMENTS_PID must name the payments process");
const shots = new URL("./screenshots/", import.meta.url).pathname;
mkdirSync(shots, { recursive: true });
const TIMEOUT = 20_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    // playwright adds --headless and a fresh temporary --user-data-dir itself
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function step(name, fn) {
  process.stdout.write(`  ${name} ... `);
  await fn();
  console.log("ok");
}

try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  await step("page loads with a ready backend", async () => {
    await page.goto(base);
    await page.getByRole("heading", { name: "Your account" }).waitFor();
    await page.locator("#backend.badge-ready").waitFor();
  });

  await step("open an account", async () => {
    await page.getByRole("button", { name: "Open a new account" }).click();
    await page.locator("#account").waitFor({ state: "visible" });
    assert.equal(await page.locator("#balance").textContent(), "0.00");
    assert.match(await page.locator("#user-id").textContent(), /^[0-9a-f-]{36}$/);
  });

  await step("top up 5.00", async () => {
    await page.getByLabel("Top-up amount").fill("5.00");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.locator("#balance", { hasText: "5.00" }).waitFor();
  });

  await step("order 2.00 settles as FINISHED without a reload; balance 3.00", async () => {
    await page.getByLabel("Price").fill("2.00");
    await page.getByLabel("Description").fill("Green tea");
    await page.getByRole("button", { name: "Place order" }).click();
    const row = page.locator("li.order", { hasText: "Green tea" });
    await row.locator(".status", { hasText: "FINISHED" }).waitFor();
    assert.equal(await row.locator(".price").textContent(), "$2.00");
    await page.locator("#balance", { hasText: "3.00" }).waitFor();
  });

  await step("order 10.00 is CANCELLED for insufficient funds", async () => {
    await page.getByLabel("Price").fill("10.00");
    await page.getByLabel("Description").fill("Espresso machine");
    await page.getByRole("button", { name: "Place order" }).click();
    const row = page.locator("li.order", { hasText: "Espresso machine" });
    await row.locator(".status", { hasText: "CANCELLED" }).waitFor();
    assert.equal(await row.locator(".reason").textContent(), "Insufficient funds");
    assert.equal(await page.locator("#balance").textContent(), "3.00");
  });

  await step("refund the paid order: REFUNDED, balance 5.00", async () => {
    const row = page.locator("li.order", { hasText: "Green tea" });
    assert.equal(await row.getByRole("button", { name: "Cancel" }).isVisible(), false, "no Cancel on a paid order");
    await row.getByRole("button", { name: "Refund" }).click();
    await row.locator(".status", { hasText: "REFUNDED" }).waitFor();
    await page.locator("#balance", { hasText: "5.00" }).waitFor();
    assert.equal(await row.getByRole("button", { name: "Refund" }).isVisible(), false, "refunded once");
  });

  await step("cancel an order still NEW: CANCELLED by the user, nothing charged", async () => {
    // Payments is held back, so the order stays NEW until the cancel is in.
    process.kill(paymentsPid, "SIGSTOP");
    try {
      await page.getByLabel("Price").fill("1.00");
      await page.getByLabel("Description").fill("Tea cake");
      await page.getByRole("button", { name: "Place order" }).click();
      const row = page.locator("li.order", { hasText: "Tea cake" });
      await row.locator(".status", { hasText: "NEW" }).waitFor();
      assert.equal(await row.getByRole("button", { name: "Refund" }).isVisible(), false, "no Refund before payment");
      await row.getByRole("button", { name: "Cancel" }).click();
      await row.locator(".status", { hasText: "CANCELLING" }).waitFor();
    } finally {
      process.kill(paymentsPid, "SIGCONT");
    }
    const row = page.locator("li.order", { hasText: "Tea cake" });
    await row.locator(".status", { hasText: /^CANCELLED$/ }).waitFor();
    assert.equal(await row.locator(".reason").textContent(), "Cancelled by you");
    await page.reload();
    await page.locator("#balance", { hasText: "5.00" }).waitFor();
  });

  await step("an invalid amount shows an error and changes nothing", async () => {
    await page.getByLabel("Top-up amount").fill("1.234");
    await page.getByRole("button", { name: "Top up" }).click();
    await page.getByRole("alert").filter({ hasText: "Enter an amount like 12.34" }).waitFor();
    assert.equal(await page.locator("#balance").textContent(), "5.00");
  });

  await step("the account and its orders are remembered across reloads", async () => {
    const id = await page.locator("#user-id").textContent();
    await page.reload();
    await page.locator("#account").waitFor({ state: "visible" });
    assert.equal(await page.locator("#user-id").textContent(), id);
    await page.locator("li.order .status", { hasText: "REFUNDED" }).waitFor();
    assert.equal(await page.locator("li.order").count(), 3);
  });

  await step("server-side errors are shown from the problem document", async () => {
    await page.getByRole("button", { name: "Switch account" }).click();
    await page.getByLabel("Existing account id").fill("00000000-0000-4000-8000-000000000000");
    await page.getByRole("button", { name: "Use this account" }).click();
    await page.getByRole("alert").filter({ hasText: "ACCOUNT_NOT_FOUND" }).waitFor();
  });

  assert.deepEqual(errors, [], "no JavaScript errors");
  await page.close();

  await step("usable at 375 px, keyboard only", async () => {
    const phone = await browser.newPage({ viewport: { width: 375, height: 812 } });
    phone.setDefaultTimeout(TIMEOUT);
    await phone.goto(base);
    await phone.keyboard.press("Tab"); // skip to the first control
    await phone.locator("#open-account:focus").waitFor();
    await phone.keyboard.press("Enter");
    await phone.locator("#account").waitFor({ state: "visible" });
    await phone.getByLabel("Top-up amount").fill("5.00");
    await phone.keyboard.press("Enter");
    await phone.locator("#balance", { hasText: "5.00" }).waitFor();
    await phone.getByLabel("Price").fill("2.00");
    await phone.getByLabel("Description").fill("Croissant");
    await phone.keyboard.press("Enter");
    await phone.locator("li.order .status", { hasText: "FINISHED" }).waitFor();
    await phone.getByLabel("Price").fill("10.00");
    await phone.getByLabel("Description").fill("Bicycle");
    await phone.keyboard.press("Enter");
    await phone.locator("li.order", { hasText: "Bicycle" }).locator(".status", { hasText: "CANCELLED" }).waitFor();
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow}px)`);
    await phone.screenshot({ path: join(shots, "ui-375.png"), fullPage: true });
    await phone.close();
  });

  await step("final state screenshot", async () => {
    const desk = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    desk.setDefaultTimeout(TIMEOUT);
    await desk.goto(base);
    await desk.getByRole("button", { name: "Open a new account" }).click();
    await desk.getByLabel("Top-up amount").fill("5.00");
    await desk.getByRole("button", { name: "Top up" }).click();
    await desk.locator("#balance", { hasText: "5.00" }).waitFor();
    for (const [price, what] of [["2.00", "Green tea"], ["10.00", "Espresso machine"]]) {
      await desk.getByLabel("Price").fill(price);
      await desk.getByLabel("Description").fill(what);
      await desk.getByRole("button", { name: "Place order" }).click();
      await desk.locator("li.order", { hasText: what }).locator(".status:not(.status-NEW)").waitFor();
    }
    await desk.locator("#balance", { hasText: "3.00" }).waitFor();
    await desk.screenshot({ path: join(shots, "ui.png"), fullPage: true });
    await desk.close();
  });
  console.log(`screenshots in ${shots}`);
} finally {
  await browser.close();
}
