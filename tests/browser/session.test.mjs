// Cookie mode in real Chromium: a sibling subdomain planting its own refresh cookie for the
// parent domain (`__Secure-` allows `Domain`; `*.localhost` is a secure context, so
// Chromium keeps Secure cookies there over plain HTTP).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { startServer, launchBrowser, createUser } from './support.mjs';

const PASSWORD = 'purple monkey dishwasher nine';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  await createUser(server.base, 'alice', PASSWORD, ['user']);
  await createUser(server.base, 'mallory', PASSWORD, ['user']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Signs `user` in on the /login page of `origin`, then opens a same-origin page without the
 * pages' CSP (which allows no fetch) for scripts to call the API from. */
async function signedIn(context, origin, user) {
  const page = await context.newPage();
  await page.goto(`${origin}/login`);
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${origin}/account`);
  await page.goto(`${origin}/healthz`);
  return page;
}

const whoAmI = (page) =>
  page.evaluate(async () => {
    const res = await fetch('/users/me');
    return res.ok ? (await res.json()).username : res.status;
  });

const refresh = (page) =>
  page.evaluate(async () => {
    const csrf = document.cookie.match(/__Host-tessera_csrf=([^;]+)/)[1];
    const res = await fetch('/session/refresh', { method: 'POST', headers: { 'x-csrf-token': csrf } });
    return res.status;
  });

test('a refresh cookie planted by a sibling subdomain does not switch the account', async () => {
  const port = new URL(server.base).port;
  const auth = `http://auth.app.localhost:${port}`;
  // Mallory's own refresh token, planted from evil.app.localhost for the parent domain with
  // a longer Path, so that Chromium sends it before Alice's.
  const res = await fetch(`${server.base}/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: 'mallory', password: PASSWORD }),
  });
  const planted = res.headers
    .getSetCookie()
    .find((c) => c.startsWith('__Secure-tessera_rt='))
    .split(';')[0];
  const evil = createServer((_req, out) => {
    out.setHeader('set-cookie', `${planted}; Domain=app.localhost; Path=/session/refresh; Secure; HttpOnly; Max-Age=600`);
    out.end('hello');
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  try {
    const context = await browser.newContext();
    const page = await signedIn(context, auth, 'alice');
    assert.equal(await whoAmI(page), 'alice');
    const visit = await context.newPage();
    await visit.goto(`http://evil.app.localhost:${evil.address().port}/`);
    await visit.close();
    const rts = (await context.cookies()).filter((c) => c.name === '__Secure-tessera_rt');
    assert.equal(rts.length, 2, 'Chromium keeps both refresh cookies');

    assert.equal(await refresh(page), 400, 'an ambiguous refresh is refused');
    assert.equal(await whoAmI(page), 'alice', 'still Alice, never Mallory');
    await context.close();
  } finally {
    evil.close();
  }
});

test('parallel refreshes from one browser never sign the user out', async () => {
  // Several tabs or calls refreshing at once: Chromium's cookie jar lets a request leave
  // with a refresh cookie whose successor another request has already rotated. Within the
  // grace window that token gets the newest token of its chain, not a revoked session.
  const context = await browser.newContext();
  const page = await signedIn(context, server.base, 'alice');
  for (let round = 0; round < 8; round++) {
    const statuses = await page.evaluate(async () => {
      const csrf = document.cookie.match(/__Host-tessera_csrf=([^;]+)/)[1];
      const one = () =>
        fetch('/session/refresh', { method: 'POST', headers: { 'x-csrf-token': csrf } }).then((r) => r.status);
      return Promise.all([one(), one(), one(), one(), one(), one()]);
    });
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200], `round ${round}`);
    assert.equal(await whoAmI(page), 'alice', `round ${round}`);
  }
  // The chain is intact: a plain refresh still works.
  assert.equal(await refresh(page), 200);
  await context.close();
});

test('the account page renews a session whose access cookie has expired', async () => {
  const context = await browser.newContext();
  const page = await signedIn(context, server.base, 'alice');
  // What the browser does after the access cookie's Max-Age (15 minutes): forget it.
  await context.clearCookies({ name: '__Host-tessera_at' });
  await page.goto(`${server.base}/account`);
  // Through /session/resume and /account?resumed=1 to the page, its guard dropped.
  assert.match(page.url(), /\/account$/);
  assert.match(await page.content(), /alice/);
  const names = (await context.cookies()).map((c) => c.name).sort();
  assert.deepEqual(names, ['__Host-tessera_at', '__Host-tessera_csrf', '__Secure-tessera_rt']);
  // Signed out (from a page without the pages' CSP, which allows no fetch): the page goes
  // to sign-in.
  await page.goto(`${server.base}/healthz`);
  await page.evaluate(async () => {
    const csrf = document.cookie.match(/__Host-tessera_csrf=([^;]+)/)[1];
    await fetch('/session/logout', { method: 'POST', headers: { 'x-csrf-token': csrf } });
  });
  await page.goto(`${server.base}/account`);
  assert.match(page.url(), /\/login/);
  await context.close();
});

test('signing in again on the page ends the session the browser held, never a planted one', async () => {
  // The sign-in forms post under /session, so Chromium sends the refresh cookie along once
  // the access cookie has expired. A sibling subdomain has planted Mallory's refresh cookie
  // for the parent domain on that path: Chromium sends both; only Alice's old session,
  // the one her CSRF cookie names, may end.
  const port = new URL(server.base).port;
  const auth = `http://auth.app.localhost:${port}`;
  const res = await fetch(`${server.base}/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: 'mallory', password: PASSWORD }),
  });
  const mallory = Object.fromEntries(
    res.headers.getSetCookie().map((c) => c.split(';')[0].split(/=(.*)/s).slice(0, 2)),
  );
  const evil = createServer((_req, out) => {
    out.setHeader(
      'set-cookie',
      `__Secure-tessera_rt=${mallory['__Secure-tessera_rt']}; Domain=app.localhost; Path=/session/login; Secure; HttpOnly; Max-Age=600`,
    );
    out.end('hello');
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  const asCookie = (at) =>
    fetch(`${server.base}/users/me`, { headers: { cookie: `__Host-tessera_at=${at}` } }).then((r) => r.status);
  try {
    const context = await browser.newContext();
    const page = await signedIn(context, auth, 'alice');
    const first = (await context.cookies()).find((c) => c.name === '__Host-tessera_at').value;
    assert.equal(await asCookie(first), 200);
    const visit = await context.newPage();
    await visit.goto(`http://evil.app.localhost:${evil.address().port}/`);
    await visit.close();
    // The access cookie's Max-Age has passed; the session and its refresh cookie live on.
    await context.clearCookies({ name: '__Host-tessera_at' });
    const posted = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posted.push(r);
    });
    await page.goto(`${auth}/login`);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${auth}/account`);
    assert.equal(new URL(posted[0].url()).pathname, '/session/login');
    const sent = (await posted[0].allHeaders()).cookie ?? '';
    assert.equal(sent.match(/__Secure-tessera_rt=/g)?.length, 2, 'both refresh cookies came along');
    assert.equal(await asCookie(first), 401, "Alice's old session ended");
    assert.equal(await asCookie(mallory['__Host-tessera_at']), 200, "Mallory's session lives");
    await context.close();
  } finally {
    evil.close();
  }
});
