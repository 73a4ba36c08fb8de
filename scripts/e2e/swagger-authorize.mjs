// Drives Swagger UI in headless Chromium: signs in through `POST
// /api/v1/auth/token`, pastes the token into Authorize, then creates a product
// through the admin-only `POST /api/v1/products`, and checks it got 201.
//
//   npm install --prefix /tmp/pw playwright-core   (once; then NODE_PATH=/tmp/pw/node_modules)
//   node scripts/e2e/swagger-authorize.mjs http://127.0.0.1:8080 EMAIL PASSWORD [SCREENSHOT.png]
//
// Needs a Chromium at /usr/bin/chromium (Debian: apt-get install chromium)
// and an admin account (`shop admin create`).
import { createRequire } from "node:module";

// require() honours NODE_PATH, so playwright-core need not live in the repo.
const { chromium } = createRequire(import.meta.url)("playwright-core");

const [base, email, password, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage();
await page.goto(`${base}/swagger-ui/`);

// Sign in from Swagger UI itself: Try it out on POST /api/v1/auth/token.
const tokenOp = page.locator("#operations-auth-create_token");
await tokenOp.locator(".opblock-summary").click();
await tokenOp.getByRole("button", { name: "Try it out" }).click();
await tokenOp.locator("textarea.body-param__text").fill(JSON.stringify({ email, password }));
const tokenResponse = page.waitForResponse((r) => r.url().endsWith("/api/v1/auth/token"));
await tokenOp.getByRole("button", { name: "Execute" }).click();
const tokens = await (await tokenResponse).json();
if (!tokens.access_token) throw new Error(`no token: ${JSON.stringify(tokens)}`);

// Authorize with it.
await page.getByRole("button", { name: "Authorize" }).first().click();
await page.locator(".modal-ux input[type=text]").fill(tokens.access_token);
await page.locator(".modal-ux button.authorize").click();
await page.locator(".modal-ux button.btn-done").click();

// An admin-only operation now carries the token.
const createOp = page.locator("#operations-catalog-create_product");
await createOp.locator(".opblock-summary").click();
await createOp.getByRole("button", { name: "Try it out" }).click();
const sku = `SWAGGER-${Date.now()}`;
await createOp.locator("textarea.body-param__text").fill(JSON.stringify({
  sku, name: "Made in Swagger UI", price: { amount_minor: 500, currency: "EUR" },
}));
const created = page.waitForResponse((r) => r.url().endsWith("/api/v1/products") && r.request().method() === "POST");
await createOp.getByRole("button", { name: "Execute" }).click();
const response = await created;
const authorization = response.request().headers()["authorization"] ?? "";
console.log(`POST /api/v1/products -> ${response.status()}, authorization: ${authorization.slice(0, 16)}...`);
if (shot) await page.screenshot({ path: shot, fullPage: false });
await browser.close();
if (response.status() !== 201 || !authorization.startsWith("Bearer ")) process.exit(1);
console.log("PASS: Swagger UI's Authorize works with a token from /api/v1/auth/token");
