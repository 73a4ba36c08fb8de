// A person's checkout, done entirely in Swagger UI (headless Chromium):
// the admin signs in, authorizes, creates a product and stocks it; a customer
// registers, signs in, authorizes, fills the cart, checks out with the
// sandbox success card (201 confirmed), reads the order, its timeline and
// the "Order confirmed" notification; checks out again with the declined
// card (201 failed); the admin sees the stock reduced by the first order
// only. Exit 1 on any unexpected answer.
//
//   npm install --prefix /tmp/pw playwright-core   (once; then NODE_PATH=/tmp/pw/node_modules)
//   node scripts/e2e/swagger-checkout.mjs http://127.0.0.1:8080 ADMIN_EMAIL ADMIN_PASSWORD [SCREENSHOT.png]
//
// Needs a Chromium at /usr/bin/chromium (Debian: apt-get install chromium)
// and an admin account (`shop admin create`).
import { createRequire } from "node:module";

const { chromium } = createRequire(import.meta.url)("playwright-core");

const [base, adminEmail, adminPassword, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
await page.goto(`${base}/swagger-ui/`);

function check(what, ok, detail) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${detail ? `: ${detail}` : ""}`);
  if (!ok) process.exitCode = 1;
}

// Try it out on one operation: fill its parameters and body, execute, and
// return the answer's status and JSON.
async function tryOut(tag, operation, method, path, { params = {}, body } = {}) {
  const op = page.locator(`#operations-${tag}-${operation}`);
  if (!(await op.locator(".opblock-body").isVisible())) {
    await op.locator(".opblock-summary").click();
  }
  const tryIt = op.getByRole("button", { name: "Try it out" });
  if (await tryIt.count()) await tryIt.click();
  let url = path;
  for (const [name, value] of Object.entries(params)) {
    await op.locator(`tr[data-param-name="${name}"] input`).fill(value);
    url = url.replace(`{${name}}`, value);
  }
  if (body !== undefined) {
    await op.locator("textarea.body-param__text").fill(JSON.stringify(body));
  }
  const answered = page.waitForResponse(
    (r) => r.request().method() === method && new URL(r.url()).pathname === url,
  );
  await op.locator("button.execute").click();
  const response = await answered;
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* empty body */ }
  return { status: response.status(), json, headers: response.headers() };
}

async function signInAndAuthorize(email, password) {
  const { status, json } = await tryOut("auth", "create_token", "POST", "/api/v1/auth/token", {
    body: { email, password },
  });
  check(`sign in as ${email}`, status === 200, status);
  await page.getByRole("button", { name: "Authorize" }).first().click();
  const logout = page.locator(".modal-ux button", { hasText: "Logout" });
  if (await logout.count()) await logout.click();
  await page.locator(".modal-ux input[type=text]").fill(json.access_token);
  await page.locator(".modal-ux button.authorize").click();
  await page.locator(".modal-ux button.btn-done").click();
}

// The admin: a product, five in stock.
await signInAndAuthorize(adminEmail, adminPassword);
const sku = `SWAGGER-${Date.now()}`;
let r = await tryOut("catalog", "create_product", "POST", "/api/v1/products", {
  body: { sku, name: "Swagger mug", price: { amount_minor: 1299, currency: "EUR" } },
});
check("admin creates a product", r.status === 201, r.status);
const productId = r.json.id;
r = await tryOut("inventory", "adjust_stock", "POST", "/api/v1/inventory/{sku}/adjustments", {
  params: { sku }, body: { quantity: 5, reason: "receive" },
});
check("admin receives 5 units", r.status === 200 && r.json.on_hand === 5, JSON.stringify(r.json));

// A customer registers, signs in and checks out.
const email = `ada-${Date.now()}@example.com`;
const password = "plum kettle orbit 42";
r = await tryOut("users", "register", "POST", "/api/v1/users", {
  body: { email, password, display_name: "Ada" },
});
check("customer registers", r.status === 201, r.status);
await signInAndAuthorize(email, password);
r = await tryOut("orders", "put_cart", "PUT", "/api/v1/cart", {
  body: { items: [{ product_id: productId, quantity: 2 }] },
});
check("cart holds 2 mugs", r.status === 200, JSON.stringify(r.json));
r = await tryOut("orders", "place_order", "POST", "/api/v1/orders", {
  params: { "Idempotency-Key": `swagger-${Date.now()}` },
  body: { payment_method: { card_number: "4242424242424242" } },
});
check("checkout with the success card", r.status === 201 && r.json.status === "confirmed",
  `${r.status} ${r.json?.status}, total ${JSON.stringify(r.json?.total)}, card ${r.json?.card_last4}`);
const orderId = r.json.id;
r = await tryOut("orders", "get_order", "GET", "/api/v1/orders/{id}", { params: { id: orderId } });
check("the order reads confirmed", r.json.status === "confirmed", r.json.status);
r = await tryOut("orders", "order_timeline", "GET", "/api/v1/orders/{id}/timeline", { params: { id: orderId } });
const kinds = r.json.map((e) => e.kind).join(" > ");
check("its timeline", kinds === "placed > stock_reserved > payment_authorized > stock_committed > payment_captured > confirmed", kinds);
let subjects = [];
for (let i = 0; i < 40 && !subjects.some((s) => s.startsWith("Order confirmed")); i++) {
  await page.waitForTimeout(250);
  r = await tryOut("notifications", "list_notifications", "GET", "/api/v1/notifications");
  subjects = r.json.items.map((n) => n.subject);
}
check("the 'Order confirmed' notification", subjects.some((s) => s.startsWith("Order confirmed")), subjects.join(" | "));

r = await tryOut("orders", "put_cart", "PUT", "/api/v1/cart", {
  body: { items: [{ product_id: productId, quantity: 2 }] },
});
r = await tryOut("orders", "place_order", "POST", "/api/v1/orders", {
  params: { "Idempotency-Key": `swagger-declined-${Date.now()}` },
  body: { payment_method: { card_number: "4000000000000002" } },
});
check("checkout with the declined card", r.status === 201 && r.json.status === "failed",
  `${r.status} ${r.json?.status}: ${r.json?.reason}`);
if (shot) await page.screenshot({ path: shot, fullPage: false });

// The admin: 5 - 2 sold; the declined order's 2 are back.
await signInAndAuthorize(adminEmail, adminPassword);
r = await tryOut("inventory", "get_stock", "GET", "/api/v1/inventory/{sku}", { params: { sku } });
check("stock after both checkouts", r.json.on_hand === 3 && r.json.reserved === 0, JSON.stringify(r.json));
await browser.close();
console.log(process.exitCode ? "FAILED" : "PASS: the checkout works from Swagger UI");
