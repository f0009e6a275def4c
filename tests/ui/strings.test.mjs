// Every user-visible string of the web UI goes through assets/strings.js, and every language
// there has every key. No browser, no daemon: run with `node --test tests/ui/strings.test.mjs`
// (scripts/test-ui runs it before the browser test).
//
// The scan tokenizes each module in assets/ (strings, templates, regular expressions and
// comments told apart) and reports a literal holding a letter where the user would see it:
//   - a child of el(tag, attrs, ...children), or an argument of append/prepend/replaceChildren/
//     createTextNode/announce/alert/confirm/new Notification;
//   - the value of textContent/innerText/innerHTML/outerHTML or of an attribute a person sees
//     or hears (title, placeholder, alt, label, aria-label, aria-description, aria-valuetext,
//     aria-roledescription), whether assigned, set in an attributes object, or by setAttribute;
// and in index.html any text between tags or such an attribute (the product name excepted).
// A line may opt out with a trailing `// i18n-ok` comment (for text that is data, not UI).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

const ASSETS = path.join(import.meta.dirname, "..", "..", "assets");
const VISIBLE_KEYS = new Set(["textContent", "innerText", "innerHTML", "outerHTML", "title", "placeholder", "alt", "label",
  "aria-label", "aria-description", "aria-valuetext", "aria-roledescription"]);
const TEXT_CALLS = new Set(["append", "prepend", "replaceChildren", "createTextNode", "announce", "alert", "confirm", "Notification"]);
const HAS_LETTER = /\p{L}/u;
// append() on these is FormData/URLSearchParams/Headers (a field name), not the DOM.
const FORM_LIKE = /data|form|params|query|headers/i;
const BRAND = "OpenTranscribe";

/// The hard-coded visible strings in one module: [{ line, text, why }].
export function findHardCoded(source) {
  const optedOut = new Set(source.split("\n").flatMap((l, n) => (/\/\/\s*i18n-ok\b/.test(l) ? [n + 1] : [])));
  const tokens = outerTokens(source);
  const found = [];
  // Bracket stack: for "(" the callee name and the current argument index.
  const stack = [];
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k];
    if (t.type === "punct") {
      if (t.value === "(") {
        const before = tokens[k - 1];
        const callee = before && before.type === "ident" ? before.value : null;
        const receiver = tokens[k - 2]?.value === "." ? tokens[k - 3]?.value : null;
        stack.push({ open: "(", callee, receiver, arg: 0 });
      } else if (t.value === "[" || t.value === "{") stack.push({ open: t.value });
      else if (t.value === ")" || t.value === "]" || t.value === "}") stack.pop();
      else if (t.value === "," && stack.length && stack.at(-1).open === "(") stack.at(-1).arg++;
      continue;
    }
    if (t.type !== "str" || !HAS_LETTER.test(t.value) || optedOut.has(t.line)) continue;
    const prev = tokens[k - 1];
    const prev2 = tokens[k - 2];
    const top = stack.at(-1);
    let why = null;
    if (prev && (prev.value === "=" || prev.value === ":") && prev2 && VISIBLE_KEYS.has(prev2.value)
      && !(prev.value === "=" && tokens[k - 3]?.value === "=")) {
      why = `${prev2.value} ${prev.value}`;
    } else if (top && top.open === "(" && top.callee === "el" && top.arg >= 2 && isWholeArgument(tokens, k)) {
      why = "el() child";
    } else if (top && top.open === "(" && TEXT_CALLS.has(top.callee) && isWholeArgument(tokens, k)
      && !FORM_LIKE.test(top.receiver || "")) {
      why = `${top.callee}() argument`;
    } else if (top && top.open === "(" && top.callee === "setAttribute" && top.arg === 1
      && VISIBLE_KEYS.has(tokens[k - 2]?.value)) {
      why = `setAttribute("${tokens[k - 2].value}")`;
    }
    if (why) found.push({ line: t.line, text: t.value.trim(), why });
  }
  return found;
}

/// A literal that is an argument by itself or the start/end of one (not a key or a
/// comparison inside an expression such as `x === "a" ? ... : ...`).
function isWholeArgument(tokens, k) {
  const prev = tokens[k - 1]?.value;
  const next = tokens[k + 1]?.value;
  if (["===", "==", "!="].includes(prev) || prev === "=" && tokens[k - 2]?.value === "=") return false;
  if (next === "=" || next === "!" || next === ":" && prev === "{") return false;
  return true;
}

/// The tokens outside templates' ${} expressions (the literals inside those count as part
/// of their template's text instead).
function outerTokens(source) {
  return tokenize(source).filter((t) => !t.inner);
}

/// Tokens of a JavaScript source: { type: "str" | "ident" | "punct" | "num", value, line,
/// inner }. A template literal is one "str" token whose value is its text parts plus the
/// string literals inside its ${} expressions (so `${n} files` and `${x ? "a" : "b"}` both
/// count); the tokens of those expressions are marked `inner`.
export function tokenize(source) {
  const out = [];
  let i = 0;
  let line = 1;
  let innerDepth = 0;
  const last = () => out.at(-1) || null;
  const regexAllowed = () => {
    const t = last();
    if (!t) return true;
    if (t.type === "str" || t.type === "num") return false;
    if (t.type === "ident") return /^(return|typeof|case|in|of|void|delete|throw|new|else|do|yield|await)$/.test(t.value);
    return !/^[)\]}]$/.test(t.value) && t.value !== "regex";
  };
  const push = (token) => { token.inner = innerDepth > 0; out.push(token); };
  function readQuoted(quote) {
    const start = line;
    let value = "";
    i++;
    while (i < source.length && source[i] !== quote) {
      if (source[i] === "\\") { value += source[i + 1]; i += 2; continue; }
      if (source[i] === "\n") line++;
      value += source[i++];
    }
    i++;
    return { type: "str", value, line: start };
  }
  function readTemplate() {
    const start = line;
    let value = "";
    i++;
    while (i < source.length && source[i] !== "`") {
      if (source[i] === "\\") { value += source[i + 1]; i += 2; continue; }
      if (source[i] === "$" && source[i + 1] === "{") {
        i += 2;
        const from = out.length;
        innerDepth++;
        scan(true);
        innerDepth--;
        value += ` ${out.slice(from).filter((t) => t.type === "str").map((t) => t.value).join(" ")} `;
        continue;
      }
      if (source[i] === "\n") line++;
      value += source[i++];
    }
    i++;
    return { type: "str", value, line: start };
  }
  function scan(untilBrace) {
    let depth = 0;
    while (i < source.length) {
      const c = source[i];
      if (c === "\n") { line++; i++; continue; }
      if (/\s/.test(c)) { i++; continue; }
      if (c === "/" && source[i + 1] === "/") { while (i < source.length && source[i] !== "\n") i++; continue; }
      if (c === "/" && source[i + 1] === "*") {
        const end = source.indexOf("*/", i + 2);
        const stop = end < 0 ? source.length : end + 2;
        line += (source.slice(i, stop).match(/\n/g) || []).length;
        i = stop;
        continue;
      }
      if (c === "\"" || c === "'") { push(readQuoted(c)); continue; }
      if (c === "`") { push(readTemplate()); continue; }
      if (c === "/" && regexAllowed()) {
        let inClass = false;
        const start = line;
        i++;
        while (i < source.length && (inClass || source[i] !== "/")) {
          if (source[i] === "\\") i++;
          else if (source[i] === "[") inClass = true;
          else if (source[i] === "]") inClass = false;
          i++;
        }
        i++;
        while (/[a-z]/i.test(source[i] || "")) i++;
        push({ type: "punct", value: "regex", line: start });
        continue;
      }
      if (/[\p{L}_$]/u.test(c)) {
        let value = "";
        while (i < source.length && /[\p{L}\p{N}_$]/u.test(source[i])) value += source[i++];
        push({ type: "ident", value, line });
        continue;
      }
      if (/[0-9]/.test(c)) {
        let value = "";
        while (i < source.length && /[0-9a-fA-FxXn._]/.test(source[i])) value += source[i++];
        push({ type: "num", value, line });
        continue;
      }
      if (untilBrace) {
        if (c === "{") depth++;
        if (c === "}") {
          if (depth === 0) { i++; return; }
          depth--;
        }
      }
      push({ type: "punct", value: c, line });
      i++;
    }
  }
  scan(false);
  return out;
}

/// Visible text in an HTML page: text between tags and visible attributes.
export function findHardCodedHtml(html) {
  const found = [];
  const body = html.replace(/<!--[\s\S]*?-->/g, "").replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, "");
  const lineOf = (index) => body.slice(0, index).split("\n").length;
  for (const match of body.matchAll(/>([^<]+)</g)) {
    const text = match[1].replace(/&[a-z#0-9]+;/gi, " ").trim();
    if (HAS_LETTER.test(text) && text !== BRAND) found.push({ line: lineOf(match.index), text, why: "text" });
  }
  for (const match of body.matchAll(/\s(title|placeholder|alt|label|aria-label|aria-description)\s*=\s*"([^"]*)"/gi)) {
    if (HAS_LETTER.test(match[2])) found.push({ line: lineOf(match.index), text: match[2], why: match[1] });
  }
  return found;
}

const modules = readdirSync(ASSETS).filter((f) => f.endsWith(".js") && !/^strings(-[a-z]+)?\.js$/.test(f)).sort();

describe("UI strings", () => {
  it("the scanner finds hard-coded text in the forms it looks for (it can fail)", () => {
    const sample = [
      "el(\"p\", {}, \"Hello there\");",
      "node.textContent = \"Saved\";",
      "el(\"button\", { \"aria-label\": \"Close the dialog\", title: `Close ${name}` }, STRINGS.close);",
      "input.setAttribute(\"placeholder\", \"Type here\");",
      "announce(`${n} files uploaded`);",
      "el(\"span\", {}, cond ? \"yes\" : STRINGS.no);",
      "list.append(el(\"li\", { class: \"muted\" }, \"Nothing\"));",
    ].join("\n");
    const found = findHardCoded(sample);
    assert.deepEqual(found.map((f) => f.line), [1, 2, 3, 3, 4, 5, 6, 7], JSON.stringify(found, null, 1));
    // What is fine: text from STRINGS, punctuation, class names, attribute keys, comparisons,
    // regular expressions with quotes in them, and opted-out lines.
    const fine = [
      "el(\"p\", { class: \"muted small\", \"data-view\": \"files\" }, STRINGS.x, \" · \", `${a}: `);",
      "if (event.key === \"Enter\") node.textContent = STRINGS.saved;",
      "const re = /\"quoted\" words/g; el(\"td\", {}, formatSize(1));",
      "el(\"code\", {}, \"auth.login\"); // i18n-ok",
      "el(\"input\", { type: \"search\", name: \"filter\", autocomplete: \"off\" });",
      "formData.append(\"file\", file); query.append(\"sort\", \"name\");",
    ].join("\n");
    assert.deepEqual(findHardCoded(fine), []);
    assert.deepEqual(findHardCodedHtml("<p>Loading</p><a title=\"Go\">…</a><title>OpenTranscribe</title>").map((f) => f.why), ["text", "title"]);
  });

  for (const file of modules) {
    it(`${file} has no hard-coded user-visible text`, () => {
      const found = findHardCoded(readFileSync(path.join(ASSETS, file), "utf8"));
      assert.deepEqual(found, [], `${file}: ${found.map((f) => `line ${f.line} (${f.why}): "${f.text}"`).join("; ")}`);
    });
  }

  it("index.html has no hard-coded user-visible text", () => {
    const found = findHardCodedHtml(readFileSync(path.join(ASSETS, "index.html"), "utf8"));
    assert.deepEqual(found, [], found.map((f) => `line ${f.line} (${f.why}): "${f.text}"`).join("; "));
  });

  it("every language has every string, of the same kind", async () => {
    // strings.js reads navigator/localStorage when present; under node it falls back to English.
    const { EN, LANGUAGES } = await import(path.join(ASSETS, "strings.js"));
    const problems = [];
    const compare = (en, other, where) => {
      for (const key of Object.keys(en)) {
        const a = en[key];
        const b = other[key];
        const at = `${where}.${key}`;
        if (b === undefined) { problems.push(`${at} missing`); continue; }
        if (typeof a !== typeof b || Array.isArray(a) !== Array.isArray(b)) { problems.push(`${at}: ${typeof a} in English, ${typeof b} here`); continue; }
        if (typeof a === "function" && a.length !== b.length) problems.push(`${at}: takes ${a.length} values in English, ${b.length} here`);
        if (Array.isArray(a) && a.length !== b.length) problems.push(`${at}: ${a.length} entries in English, ${b.length} here`);
        if (a && typeof a === "object" && !Array.isArray(a)) compare(a, b, at);
      }
      for (const key of Object.keys(other)) if (!(key in en)) problems.push(`${where}.${key} is not an English key`);
    };
    assert.ok(LANGUAGES.length >= 2, "a second language is offered");
    for (const [code] of LANGUAGES.filter(([c]) => c !== "en")) {
      const module = await import(path.join(ASSETS, `strings-${code}.js`));
      const catalogue = module[code.toUpperCase()];
      assert.ok(catalogue, `strings-${code}.js exports ${code.toUpperCase()}`);
      compare(EN, catalogue, code);
      // A translation that equals the English text everywhere is no translation.
      const same = Object.keys(EN).filter((k) => typeof EN[k] === "string" && EN[k] === catalogue[k] && HAS_LETTER.test(EN[k]));
      assert.ok(same.length < Object.keys(EN).length / 5, `${code}: ${same.length} strings equal the English ones: ${same.join(", ")}`);
    }
    assert.deepEqual(problems, []);
  });
});
