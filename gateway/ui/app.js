// The shop front: a small single page over the gateway's REST API.
// Money is handled as integer cents end to end; the text the user types is
// converted by string arithmetic, never through floating point.
"use strict";

const MAX_CENTS = 1_000_000_000_000;
const STORE_KEY = "shop.user_id";
const TOKEN_KEY = "shop.token";
const $ = (id) => document.getElementById(id);
const watchers = new Map(); // order_id -> EventSource

/** "12.34" -> 1234; null when the text is not a positive amount with at most two decimals. */
function parseCents(text) {
  const m = /^\s*(\d{1,10})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  const cents = Number(m[1]) * 100 + Number((m[2] || "").padEnd(2, "0"));
  return cents >= 1 && cents <= MAX_CENTS ? cents : null;
}

/** 1234 -> "12.34" */
function formatCents(cents) {
  const whole = Math.floor(cents / 100).toLocaleString("en-US");
  return `${whole}.${String(cents % 100).padStart(2, "0")}`;
}

function showError(message) {
  const box = $("error");
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = "Something went wrong";
  box.append(title, document.createTextNode(message));
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

/** The subject (user id) of a JWT, or null: the page only reads it, the gateway checks it. */
function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

/**
 * Signs in as `userId`: with a pasted token (whose subject is the user), or
 * else from the development gateway's token route (GATEWAY_AUTH=dev).
 * Returns the user id the token speaks for.
 */
async function signIn(userId) {
  const pasted = $("token").value.trim();
  if (pasted) {
    const subject = subjectOf(pasted);
    if (!subject) throw new Error("That is not a token: paste the bearer token your shop gave you.");
    localStorage.setItem(TOKEN_KEY, pasted);
    return subject;
  }
  let response;
  try {
    response = await fetch("/api/v1/dev/tokens", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: userId }),
    });
  } catch {
    throw new Error("The shop cannot be reached. Check your connection and try again.");
  }
  if (!response.ok) throw new Error("This shop needs a token: paste the bearer token your shop gave you.");
  localStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
  return userId;
}

/** Calls the API; throws an Error carrying the problem document's detail and code. */
async function api(method, path, body, idempotencyKey) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new Error("The shop cannot be reached. Check your connection and try again.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `HTTP ${response.status}`;
    const error = new Error(data && data.code ? `${detail} (${data.code})` : detail);
    error.code = data && data.code;
    throw error;
  }
  return data;
}

/** Runs `work` with the form's button disabled and errors shown. */
async function submitting(form, work) {
  const button = form.querySelector("button[type=submit]") || form;
  button.disabled = true;
  clearError();
  try {
    await work();
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

function currentUser() {
  return localStorage.getItem(STORE_KEY);
}

function setBalance(cents) {
  const el = $("balance");
  el.dataset.cents = String(cents);
  el.textContent = formatCents(cents);
}

function showAccount(account) {
  localStorage.setItem(STORE_KEY, account.user_id);
  $("user-id").textContent = account.user_id;
  setBalance(account.balance);
  $("welcome").hidden = true;
  for (const id of ["account", "new-order", "orders"]) $(id).hidden = false;
}

function showWelcome() {
  for (const es of watchers.values()) if (es) es.close();
  watchers.clear();
  $("order-list").replaceChildren();
  $("no-orders").hidden = false;
  $("welcome").hidden = false;
  for (const id of ["account", "new-order", "orders"]) $(id).hidden = true;
}

const REASONS = {
  INSUFFICIENT_FUNDS: "Insufficient funds",
  ACCOUNT_NOT_FOUND: "Account not found",
  CANCELLED_BY_USER: "Cancelled by you",
  EXPIRED: "Not paid in time",
};

/** Where a payment, a cancel or a refund ends (a FINISHED order may still be refunded). */
const FINAL = new Set(["FINISHED", "CANCELLED", "REFUNDED"]);

/** Cancel or refund `orderId` (`action` is "cancel" or "refund"), then follow it live. */
async function takeBack(button, orderId, action) {
  button.disabled = true;
  clearError();
  try {
    const order = await api("POST", `/api/v1/orders/${orderId}/${action}`, undefined, crypto.randomUUID());
    renderOrder(order);
    if (!FINAL.has(order.status)) watch(orderId);
  } catch (e) {
    showError(e.message);
    button.disabled = false;
  }
}

function renderOrder(order) {
  let item = document.querySelector(`li[data-order-id="${order.order_id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.className = "order";
    item.dataset.orderId = order.order_id;
    item.innerHTML = '<span class="what"></span><span class="price"></span><span class="meta"><span class="status"></span><span class="reason"></span><time></time></span><span class="actions"><button type="button" class="cancel">Cancel</button><button type="button" class="refund">Refund</button></span>';
    item.querySelector("button.cancel").addEventListener("click", (e) => takeBack(e.currentTarget, order.order_id, "cancel"));
    item.querySelector("button.refund").addEventListener("click", (e) => takeBack(e.currentTarget, order.order_id, "refund"));
    const list = $("order-list");
    const newer = [...list.children].find((li) => li.dataset.orderId < order.order_id);
    list.insertBefore(item, newer || null);
  }
  item.dataset.status = order.status;
  item.querySelector(".what").textContent = order.description || "(no description)";
  item.querySelector(".price").textContent = `$${formatCents(order.amount)}`;
  const status = item.querySelector(".status");
  status.textContent = order.status;
  status.className = `status status-${order.status}`;
  item.querySelector(".reason").textContent = order.cancel_reason ? REASONS[order.cancel_reason] || order.cancel_reason : "";
  // Cancel while the order is not final; refund once it is paid.
  const cancel = item.querySelector("button.cancel");
  cancel.hidden = FINAL.has(order.status) || order.status === "CANCELLING" || order.status === "REFUNDING";
  cancel.disabled = false;
  const refund = item.querySelector("button.refund");
  refund.hidden = order.status !== "FINISHED";
  refund.disabled = false;
  const time = item.querySelector("time");
  time.dateTime = order.created_at;
  time.textContent = new Date(order.created_at).toLocaleString();
  $("no-orders").hidden = true;
}

/**
 * Follows an order's status over SSE until it is final (a refund opens a
 * new watch: the stream of a FINISHED order has ended), then refreshes the
 * balance. EventSource cannot send a header, so it opens the stream with a
 * short-lived token for this one order.
 */
async function watch(orderId) {
  if (watchers.has(orderId)) return;
  watchers.set(orderId, null);
  let token;
  try {
    token = (await api("POST", `/api/v1/orders/${orderId}/events-token`)).token;
  } catch (e) {
    watchers.delete(orderId);
    showError(e.message);
    return;
  }
  const es = new EventSource(`/api/v1/orders/${orderId}/events?access_token=${encodeURIComponent(token)}`);
  watchers.set(orderId, es);
  es.addEventListener("order", (event) => {
    const order = JSON.parse(event.data);
    renderOrder(order);
    if (FINAL.has(order.status)) {
      es.close(); // the server ends the stream; do not let EventSource reconnect
      watchers.delete(orderId);
      refreshBalance();
    }
  });
}

async function refreshBalance() {
  const user = currentUser();
  if (!user) return;
  try {
    const account = await api("GET", `/api/v1/accounts/${user}`);
    setBalance(account.balance);
  } catch (e) {
    showError(e.message);
  }
}

async function loadOrders() {
  const page = await api("GET", `/api/v1/orders?user_id=${encodeURIComponent(currentUser())}&limit=50`);
  $("order-list").replaceChildren();
  $("no-orders").hidden = page.items.length > 0;
  for (const order of page.items) {
    renderOrder(order);
    if (!FINAL.has(order.status)) watch(order.order_id);
  }
}

async function enter(account) {
  showAccount(account);
  await loadOrders();
}

async function checkBackend() {
  const badge = $("backend");
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const ready = response.ok;
    badge.textContent = ready ? "backend ready" : "backend not ready";
    badge.className = `badge ${ready ? "badge-ready" : "badge-down"}`;
  } catch {
    badge.textContent = "backend unreachable";
    badge.className = "badge badge-down";
  }
}

function wire() {
  $("open-account").addEventListener("click", (event) =>
    submitting(event.currentTarget, async () => {
      const userId = await signIn(crypto.randomUUID());
      const account = await api("POST", "/api/v1/accounts", { user_id: userId }, `open-${userId}`);
      await enter(account);
    }),
  );

  $("use-account").addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(event.currentTarget, async () => {
      let id = $("existing-id").value.trim();
      if (!id && $("token").value.trim()) id = subjectOf($("token").value.trim()) || "";
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
        throw new Error("An account id looks like 1b4e28ba-2fa1-11d2-883f-0016d3cca427.");
      }
      id = await signIn(id);
      await enter(await api("GET", `/api/v1/accounts/${id}`));
    });
  });

  $("switch-account").addEventListener("click", () => {
    localStorage.removeItem(STORE_KEY);
    localStorage.removeItem(TOKEN_KEY);
    clearError();
    showWelcome();
  });

  $("top-up").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    submitting(form, async () => {
      const cents = parseCents($("top-up-amount").value);
      if (cents === null) throw new Error("Enter an amount like 12.34 (more than 0, at most two decimals).");
      const account = await api("POST", `/api/v1/accounts/${currentUser()}/top-up`, { amount: cents }, crypto.randomUUID());
      setBalance(account.balance);
      form.reset();
    });
  });

  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    submitting(form, async () => {
      const cents = parseCents($("order-amount").value);
      if (cents === null) throw new Error("Enter a price like 12.34 (more than 0, at most two decimals).");
      const order = await api(
        "POST",
        "/api/v1/orders",
        { user_id: currentUser(), amount: cents, description: $("order-description").value },
        crypto.randomUUID(),
      );
      renderOrder(order);
      watch(order.order_id);
      form.reset();
    });
  });
}

async function start() {
  wire();
  checkBackend();
  setInterval(checkBackend, 5000);
  const user = currentUser();
  if (!user || !localStorage.getItem(TOKEN_KEY)) return showWelcome();
  try {
    await enter(await api("GET", `/api/v1/accounts/${user}`));
  } catch (e) {
    showWelcome();
    showError(e.message);
  }
}

start();
