// Browser test of the web UI, driven as a person would use it: first-run setup, upload of a
// real speech clip, live status over the WebSocket, transcript with click-to-seek, SRT export,
// sign-out and sign-in. Run through scripts/test-ui, which starts a daemon and sets:
//   OT_UI_BASE_URL     https://127.0.0.1:PORT of a fresh daemon (no users yet)
//   OT_UI_AUDIO        speech clip to upload (LibriVox, "... John Dashwood ...")
//   OT_UI_SCREENSHOTS  folder for the screenshots
//   OT_UI_CHROMIUM     Chromium binary (default /usr/bin/chromium)
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.OT_UI_BASE_URL;
const AUDIO = process.env.OT_UI_AUDIO
  || "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav";
const SHOTS = process.env.OT_UI_SCREENSHOTS || path.join(import.meta.dirname, "screenshots");
const CHROMIUM = process.env.OT_UI_CHROMIUM || "/usr/bin/chromium";
const COMPLETE_TIMEOUT_MS = Number(process.env.OT_UI_COMPLETE_TIMEOUT_MS || 120_000);
const USERNAME = "admin";
const PASSWORD = "correct horse battery staple";
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

assert.ok(BASE, "OT_UI_BASE_URL is not set; run scripts/test-ui");

let context;
let page;
let profile;
// Console errors, uncaught exceptions and CSP violations seen anywhere during the run.
const problems = [];
// Statuses the file row showed while the job ran (from the WebSocket, the page never reloads).
const seenStatuses = new Set();
// Set while a step expects the server to refuse a sign-in (a 401 Chromium logs as an error).
let expectLoginRefusal = false;
// A step failed: the later ones depend on it and are skipped rather than failing in cascade.
let broken = null;

/// One step of the walk-through; skipped once an earlier step failed.
function step(name, fn) {
  it(name, async (t) => {
    if (broken) { t.skip(`earlier step failed: ${broken}`); return; }
    try { await fn(t); } catch (error) { broken = name; throw error; }
  });
}

/// Expected noise: Chromium logs every failed resource load as a console error, and the UI's
/// signed-out probe of /api/auth/me answers 401 (as does a refused sign-in). Everything else counts.
function expected(message) {
  if (!/Failed to load resource: the server responded with a status of 401/.test(message.text())) return false;
  const where = new URL(message.location()?.url || "/", BASE).pathname;
  return where === "/api/auth/me" || (expectLoginRefusal && where === "/api/auth/login");
}

async function shoot(name) {
  for (const [label, size] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(100);
    await page.screenshot({ path: path.join(SHOTS, `${name}-${label}.png`), fullPage: true });
    // Nothing may stick out sideways at either width.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name} at ${label} width scrolls sideways by ${overflow}px`);
  }
  await page.setViewportSize(DESKTOP);
}

describe("web UI", { timeout: COMPLETE_TIMEOUT_MS + 120_000 }, () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    profile = mkdtempSync(path.join(tmpdir(), "ot-ui-chromium-"));
    // A fresh profile every run (persistent context: Playwright takes the profile folder itself).
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        // Media plays without an earlier gesture and without an audio device.
        "--autoplay-policy=no-user-gesture-required",
      ],
      ignoreHTTPSErrors: true,
      viewport: DESKTOP,
      acceptDownloads: true,
    });
    page = context.pages()[0] || await context.newPage();
    page.on("console", (message) => {
      const text = message.text();
      if (/Content Security Policy/i.test(text)) problems.push(`CSP: ${text}`);
      else if (message.type() === "error" && !expected(message)) {
        problems.push(`console error: ${text} (${message.location()?.url || "?"})`);
      }
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    // CSP violations also come as DOM events; report them through the console listener above.
    await page.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) => {
        console.error(`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`);
      });
    });
  });

  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  step("first run shows the setup form and creates the administrator", async () => {
    await page.goto(BASE);
    await page.getByRole("heading", { name: "Create the administrator" }).waitFor();
    await shoot("setup");
    await page.getByLabel("Username").fill(USERNAME);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Create account" }).click();
    await page.locator("[data-view=files]").waitFor();
    await page.getByText("No files yet.").waitFor();
    assert.match(await page.locator("header").innerText(), new RegExp(USERNAME));
  });

  step("upload a speech file; the WebSocket moves it to completed", async (t) => {
    await page.getByLabel("Upload audio or video").setInputFiles(AUDIO);
    await page.getByRole("button", { name: "Upload", exact: true }).click();
    const name = path.basename(AUDIO);
    const row = page.locator("tbody tr", { hasText: name });
    await row.waitFor();
    const deadline = Date.now() + COMPLETE_TIMEOUT_MS;
    for (;;) {
      const status = (await row.locator("[data-status]").innerText().catch(() => "")).trim();
      if (status) seenStatuses.add(status);
      if (status.startsWith("completed")) break;
      assert.ok(!/error|cancelled/.test(status), `job ended as ${status}: ${await row.innerText()}`);
      assert.ok(Date.now() < deadline, `not completed after ${COMPLETE_TIMEOUT_MS} ms; last status ${status}`);
      await page.waitForTimeout(200);
    }
    t.diagnostic(`statuses seen: ${[...seenStatuses].join(" | ")}`);
    // The page never reloads and the UI does not poll: a status seen before "completed" means
    // the row was moved along by WebSocket events.
    assert.ok([...seenStatuses].some((s) => !s.startsWith("completed")), "no status before completed was shown");
    await row.getByRole("button", { name: "Open" }).waitFor();
    assert.equal(await row.locator("progress").getAttribute("value"), "100");
    await shoot("files");
  });

  step("the transcript opens and contains the spoken text", async () => {
    const row = page.locator("tbody tr", { hasText: path.basename(AUDIO) });
    await row.getByRole("button", { name: "Open" }).click();
    await page.locator("[data-view=transcript]").waitFor();
    await page.locator(".word").first().waitFor();
    const text = await page.locator("[data-view=transcript]").innerText();
    assert.match(text, /Dashwood/i, `transcript text: ${text}`);
    await shoot("transcript");
  });

  step("clicking a word seeks the player to that word", async () => {
    const player = page.locator("audio, video");
    await player.evaluate((media) => media.readyState >= 1 || new Promise((resolve, reject) => {
      media.addEventListener("loadedmetadata", resolve, { once: true });
      media.addEventListener("error", () => reject(new Error(`media error ${media.error?.code}`)), { once: true });
    }));
    // A word well into the clip, so a seek is distinguishable from starting at 0.
    const word = page.locator(".word", { hasText: /Dashwood/i }).first();
    const start = Number(await word.getAttribute("data-start"));
    assert.ok(start > 0.5, `word start ${start}`);
    await word.click();
    const at = await player.evaluate((media) => media.currentTime);
    assert.ok(Math.abs(at - start) <= 0.5, `currentTime ${at}, word starts at ${start}`);
    // While it plays, the word being spoken is highlighted.
    await page.locator(".word.current").first().waitFor({ timeout: 5_000 });
    await player.evaluate((media) => media.pause());
    await page.screenshot({ path: path.join(SHOTS, "transcript-playing-desktop.png") });
  });

  step("the SRT export link downloads subtitles", async () => {
    const link = page.getByRole("link", { name: "SRT" });
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    assert.match(download.suggestedFilename(), /\.srt$/);
    const body = readFileSync(await download.path(), "utf8");
    assert.match(body, /-->/, `SRT body: ${body}`);
    assert.match(body, /Dashwood/i);
  });

  step("sign out returns to the sign-in form", async () => {
    await page.getByRole("button", { name: /All files/ }).click();
    await page.locator("[data-view=files]").waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    // The session is gone on the server too: a reload lands on sign-in, not the file list.
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  step("a wrong password is refused with a message", async () => {
    await page.getByLabel("Username").fill(USERNAME);
    await page.getByLabel("Password").fill("not the password");
    expectLoginRefusal = true;
    try {
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("alert").filter({ hasText: /wrong username or password/ }).waitFor();
    } finally {
      expectLoginRefusal = false;
    }
  });

  step("signing in again shows the file list with the transcribed file", async () => {
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("[data-view=files]").waitFor();
    await page.locator("tbody tr", { hasText: path.basename(AUDIO) }).getByRole("button", { name: "Open" }).waitFor();
    // And the session survives a reload (cookie + CSRF token from /api/auth/me).
    await page.reload();
    await page.locator("[data-view=files]").waitFor();
    await page.getByRole("button", { name: "Sign out" }).waitFor();
  });

  step("a live list update keeps the file chosen in the upload form; Delete removes a file", async () => {
    await page.getByLabel("Upload audio or video").setInputFiles(AUDIO);
    // Another upload (another tab, the API) arrives over the WebSocket while the form is filled.
    const me = await (await page.request.get(`${BASE}/api/auth/me`)).json();
    const upload = await page.request.post(`${BASE}/api/files`, {
      headers: { "X-CSRF-Token": me.csrf_token },
      multipart: { file: { name: "second.wav", mimeType: "audio/wav", buffer: readFileSync(AUDIO) } },
    });
    assert.equal(upload.status(), 201, await upload.text());
    const row = page.locator("tbody tr", { hasText: "second.wav" });
    await row.waitFor();
    const chosen = await page.getByLabel("Upload audio or video").evaluate((input) => input.files.length);
    assert.equal(chosen, 1, "the list refresh wiped the file chosen in the form");
    await row.getByRole("button", { name: "Delete" }).click();
    await row.waitFor({ state: "detached" });
    assert.equal(await page.locator("tbody tr").count(), 1);
  });

  it("no console errors, uncaught exceptions or CSP violations", () => {
    assert.deepEqual(problems, []);
  });
});
