// The hosted pages in real Chromium: sign in on /login, see /account, enrol TOTP with codes
// computed from the secret the page shows (RFC 6238, below), sign out, sign in again with a
// code, revoke another browser's session and see it signed out, and check that page scripts
// cannot read the session cookies. Screenshots of every page go to tests/browser/output/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startServer, launchBrowser, screenshot, createUser } from './support.mjs';

const USER = 'page-tester';
const PASSWORD = 'correct horse battery staple';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  await createUser(server.base, USER, PASSWORD, ['user']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** RFC 4648 §6 base32 (no padding) to bytes. */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of text.replace(/[\s=]/g, '').toUpperCase()) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (HMAC-SHA-1, 30 s steps, 6 digits) for time step `step` (RFC 4226 §5.3). */
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return bin.toString().padStart(6, '0');
}

const currentStep = () => Math.floor(Date.now() / 30_000);

/** A code from a time step after `usedStep` (codes are single-use per step): waits if needed. */
async function freshCode(secret, usedStep) {
  while (currentStep() <= usedStep) {
    await new Promise((r) => setTimeout(r, 30_000 - (Date.now() % 30_000) + 50));
  }
  const step = currentStep();
  return { code: totp(secret, step), step };
}

function watchCsp(page, violations) {
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
}

async function signIn(page, password = PASSWORD) {
  await page.goto(`${server.base}/login`);
  await page.getByLabel('Username').fill(USER);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test('the RFC 6238 implementation matches the RFC test vector', () => {
  // RFC 6238 Appendix B, SHA-1, T = 59 s: 94287082 (8 digits) → last 6 digits 287082.
  const secret = Buffer.from('12345678901234567890').toString('base64');
  const b32 = (() => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    const bytes = Buffer.from(secret, 'base64');
    let bits = 0, value = 0, out = '';
    for (const b of bytes) {
      value = (value << 8) | b;
      bits += 8;
      while (bits >= 5) {
        out += alphabet[(value >>> (bits - 5)) & 31];
        bits -= 5;
      }
    }
    if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
    return out;
  })();
  assert.equal(totp(b32, 1), '287082');
});

test('a wrong password shows a clear error without saying whether the user exists', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = [];
  watchCsp(page, violations);
  const res = await page.goto(`${server.base}/login`);
  const h = res.headers();
  assert.equal(
    h['content-security-policy'],
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  );
  assert.equal(h['x-frame-options'], 'DENY');
  assert.equal(h['referrer-policy'], 'same-origin');
  assert.equal(h['strict-transport-security'], undefined, 'plain http: no HSTS');
  await screenshot(page, 'account-01-login');

  await signIn(page, 'not the right password');
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const known = await alert.innerText();
  assert.match(known, /Incorrect username or password/);
  await screenshot(page, 'account-02-login-error');

  await page.getByLabel('Username').fill('nobody-at-all');
  await page.getByLabel('Password').fill('not the right password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.equal(await page.getByRole('alert').innerText(), known);
  assert.deepEqual(violations, []);
  await context.close();
});

test("the pages' own form posts carry their origin, so browsers without Fetch Metadata can sign in", async () => {
  // With `Referrer-Policy: no-referrer` a browser sends `Origin: null` on the pages' own
  // form POSTs (Fetch, "serializing a request origin"); Chromium sends Sec-Fetch-Site too and
  // got through, but a browser without Fetch Metadata (Safari before 16.4) was refused by the
  // Origin check on every form. Show that the real origin is sent, and that the server
  // accepts the same POST with that Origin and no Sec-Fetch-Site.
  const user = 'origin-tester';
  await createUser(server.base, user, PASSWORD, ['user']);
  const context = await browser.newContext();
  const page = await context.newPage();
  const posted = [];
  page.on('request', (r) => {
    if (r.method() === 'POST') posted.push(r);
  });
  await page.goto(`${server.base}/login`);
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill('not the right password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.equal(posted.length, 1);
  const headers = await posted[0].allHeaders();
  assert.equal(headers.origin, server.base);
  assert.equal(headers.referer, `${server.base}/login`, 'a Referer only to our own origin');

  const csrf = (await context.cookies()).find((c) => c.name === '__Host-tessera_csrf').value;
  const res = await fetch(`${server.base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      cookie: `__Host-tessera_csrf=${csrf}`,
      origin: headers.origin,
    },
    body: new URLSearchParams({ csrf_token: csrf, username: user, password: PASSWORD }),
  });
  assert.equal(res.status, 303, 'signed in with Origin and no Sec-Fetch-Site');
  await context.close();
});

test('sign in, enrol TOTP, sign out, sign in with a code, revoke another session', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = [];
  watchCsp(page, violations);

  await signIn(page);
  await page.waitForURL(`${server.base}/account`);
  await page.getByRole('heading', { name: 'Your account' }).waitFor();
  assert.match(await page.locator('#profile-h').innerText(), new RegExp(USER));
  await screenshot(page, 'account-03-account');

  // Page scripts see the CSRF cookie and nothing else.
  const visible = await page.evaluate(() => document.cookie);
  assert.match(visible, /__Host-tessera_csrf=/);
  assert.doesNotMatch(visible, /tessera_at|tessera_rt/);
  // Chromium kept the Secure cookies over http://127.0.0.1 (a secure context) with the
  // attributes the server set.
  const cookies = Object.fromEntries((await context.cookies()).map((c) => [c.name, c]));
  assert.equal(cookies['__Host-tessera_at'].httpOnly, true);
  assert.equal(cookies['__Host-tessera_at'].secure, true);
  assert.equal(cookies['__Host-tessera_at'].sameSite, 'Strict');
  assert.equal(cookies['__Host-tessera_at'].path, '/');
  assert.equal(cookies['__Secure-tessera_rt'].path, '/session');
  assert.equal(cookies['__Secure-tessera_rt'].httpOnly, true);
  assert.equal(cookies['__Host-tessera_csrf'].httpOnly, false);

  // Enrol TOTP from the secret the page shows (the password is asked first: a session alone
  // cannot turn on a second factor).
  await page.locator('#enrol-password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Set up authenticator app' }).click();
  await page.getByRole('heading', { name: 'Set up your authenticator app' }).waitFor();
  const qr = page.getByRole('img', { name: /QR code/ });
  assert.ok((await qr.boundingBox()).width >= 150, 'the QR code is displayed');
  assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code loaded');
  await screenshot(page, 'account-04-totp-setup');
  const secret = (await page.locator('#secret').innerText()).replace(/\s/g, '');
  assert.match(secret, /^[A-Z2-7]{32}$/);
  // A wrong code first: the page says so and keeps the setup.
  await page.getByLabel(/6-digit code/).fill('000000' === totp(secret, currentStep()) ? '111111' : '000000');
  await page.getByRole('button', { name: /Turn on/ }).click();
  await page.getByRole('alert').waitFor();
  assert.equal((await page.locator('#secret').innerText()).replace(/\s/g, ''), secret);
  const enrolStep = currentStep();
  await page.getByLabel(/6-digit code/).fill(totp(secret, enrolStep));
  await page.getByRole('button', { name: /Turn on/ }).click();
  await page.getByRole('heading', { name: 'Two-step verification is on' }).waitFor();
  const codes = await page.locator('ul.codes li').allInnerTexts();
  assert.equal(codes.length, 10);
  await screenshot(page, 'account-05-recovery-codes');
  await page.getByRole('link', { name: 'I have saved my codes' }).click();
  await page.waitForURL(`${server.base}/account`);
  await page.locator('.badge', { hasText: 'Two-step on' }).waitFor();

  // Sign out.
  await page.locator('.topbar').getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/login\?notice=signed_out$/);
  assert.match(await page.getByRole('status').innerText(), /signed out/);
  await screenshot(page, 'account-06-signed-out');
  const res = await page.goto(`${server.base}/account`);
  assert.equal(new URL(res.url()).pathname, '/login', 'signed out: /account sends to /login');

  // Sign in again: password, then a code.
  await signIn(page);
  await page.getByRole('heading', { name: 'Two-step verification' }).waitFor();
  await screenshot(page, 'account-07-mfa-step');
  const { code } = await freshCode(secret, enrolStep);
  await page.getByLabel('Authentication code').fill(code);
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.waitForURL(`${server.base}/account`);

  // A second browser signs in with a recovery code...
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto(`${server.base}/login`);
  await otherPage.getByLabel('Username').fill(USER);
  await otherPage.getByLabel('Password').fill(PASSWORD);
  await otherPage.getByRole('button', { name: 'Sign in' }).click();
  await otherPage.getByText('Lost your device? Use a recovery code').click();
  await otherPage.getByLabel('Recovery code').fill(codes[0]);
  await otherPage.getByRole('button', { name: 'Use recovery code' }).click();
  await otherPage.waitForURL(`${server.base}/account`);

  // ...and the first one signs it out.
  await page.reload();
  const sessions = page.locator('li.session');
  assert.equal(await sessions.count(), 2);
  await screenshot(page, 'account-08-two-sessions');
  await page.locator('li.session:not(.current)').getByRole('button', { name: /Sign out/ }).click();
  await page.waitForURL(/notice=session_revoked/);
  assert.equal(await page.locator('li.session').count(), 1);

  const back = await otherPage.goto(`${server.base}/account`);
  assert.equal(new URL(back.url()).pathname, '/login', 'the revoked browser is signed out');
  assert.match(await otherPage.getByRole('status').innerText(), /session has ended/);
  await screenshot(otherPage, 'account-09-revoked-elsewhere');

  // The account page on a phone-sized screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${server.base}/account`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scrolling on a narrow screen');
  await screenshot(page, 'account-10-narrow-screen');

  assert.deepEqual(violations, []);
  await other.close();
  await context.close();
});
