// The FastAPI experience: open /docs, "Authorize" with a username and password (the OAuth2
// password flow against /token), then "Try it out" on GET /users/me and see the username.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, screenshot, createUser } from './support.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('swagger ui authorizes with the password flow and calls /users/me', async () => {
  await createUser(server.base, 'swagger-tester', 'swagger tester password', ['user']);
  const page = await browser.newPage();
  // Anything the page's content security policy blocks (an inline script, a foreign
  // request) would be a part of Swagger UI that no longer works.
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const res = await page.goto(`${server.base}/docs/`);
  assert.match(res.headers()['content-security-policy'], /script-src 'self';/);
  assert.match(res.headers()['content-security-policy'], /frame-ancestors 'none'/);
  await page.waitForSelector('.swagger-ui .information-container');
  await screenshot(page, 'docs-01-loaded');

  await page.click('button.authorize');
  const dialog = page.locator('.modal-ux');
  await dialog.waitFor();
  // The OAuth2 password-flow section (the Bearer section is separate).
  const oauth = dialog.locator('.auth-container', { hasText: 'OAuth2, password' });
  await oauth.locator('#oauth_username').fill('swagger-tester');
  await oauth.locator('#oauth_password').fill('swagger tester password');
  await screenshot(page, 'docs-02-authorize');
  await oauth.locator('button.authorize').click();
  // Authorized: the section now offers "Logout" (a failed login shows an error instead).
  await oauth.locator('button:has-text("Logout")').waitFor({ timeout: 15_000 });
  await screenshot(page, 'docs-03-authorized');
  await dialog.locator('button.btn-done').first().click();

  const op = page.locator('#operations-users-me');
  await op.locator('.opblock-summary').click();
  await op.locator('button.try-out__btn').click();
  await op.locator('button.execute').click();
  const body = op.locator('.responses-wrapper .live-responses-table tbody .response-col_description pre').first();
  await body.waitFor();
  const text = await body.innerText();
  await screenshot(page, 'docs-04-users-me');
  const status = await op.locator('.responses-wrapper .live-responses-table tbody .response-col_status').first().innerText();
  assert.equal(status.trim(), '200', `status was ${status}: ${text}`);
  const me = JSON.parse(text);
  assert.equal(me.username, 'swagger-tester');
  assert.equal(me.role, 'user');
  assert.deepEqual(await page.evaluate(() => window.__cspViolations), []);
  await page.close();
});

test('the openapi document declares the password flow and the form-encoded token endpoint', async () => {
  const doc = await (await fetch(`${server.base}/openapi.json`)).json();
  assert.match(doc.openapi, /^3\.1/);
  assert.equal(doc.components.securitySchemes.oauth2.flows.password.tokenUrl, '/token');
  assert.ok(doc.paths['/token'].post.requestBody.content['application/x-www-form-urlencoded']);
  assert.ok(doc.paths['/users/me'].get);
});
