// Shared helpers for the browser tests: start the real `tessera` binary on a free port
// with a fresh data directory, and launch Debian's Chromium through playwright-core.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..', '..');
export const outputDir = join(here, 'output');
export const ADMIN_PASSWORD = 'browser tests bootstrap phrase';

/** The tessera binary built by scripts/test.sh (override with TESSERA_BIN). */
function binary() {
  if (process.env.TESSERA_BIN) return process.env.TESSERA_BIN;
  const dir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target');
  return join(dir, 'debug', 'tessera');
}

/**
 * Starts `tessera serve` on 127.0.0.1 with port 0 and resolves with its base URL once it
 * prints the listening line. `env` adds configuration variables.
 */
export async function startServer(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-browser-'));
  // TESSERA_BIN names the binary; passed on, the server would read it as a configuration
  // key (`bin`) and refuse to start.
  const { TESSERA_BIN: _bin, ...inherited } = process.env;
  const child = spawn(binary(), ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: {
      ...inherited,
      TESSERA_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      ...env,
    },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let log = '';
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 60_000);
    child.stderr.on('data', (chunk) => {
      log += chunk.toString();
      const m = log.match(/Tessera listening on (http:\/\/[0-9.:]+) \(/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
  child.stderr.on('data', (chunk) => {
    if (process.env.TEST_LOG) process.stderr.write(chunk);
  });
  return {
    base,
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Launches headless Chromium (Debian's /usr/bin/chromium) with a fresh profile. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  return chromium.launch({
    executablePath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** Saves a full-page screenshot under tests/browser/output/. */
export async function screenshot(page, name) {
  mkdirSync(outputDir, { recursive: true });
  await page.screenshot({ path: join(outputDir, `${name}.png`), fullPage: true });
}

/** Logs in through the API and returns the token response. */
export async function apiLogin(base, username, password) {
  const res = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }),
  });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Creates a user through the admin API. */
export async function createUser(base, username, password, roles = ['user']) {
  const admin = await apiLogin(base, 'admin', ADMIN_PASSWORD);
  const res = await fetch(`${base}/admin/users`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${admin.access_token}` },
    body: JSON.stringify({ username, password, roles }),
  });
  if (res.status !== 201) throw new Error(`create user failed: ${res.status} ${await res.text()}`);
  return res.json();
}
