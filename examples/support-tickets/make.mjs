#!/usr/bin/env node
// Makes tickets.jsonl: a support-desk triage task, the same bytes every run (a seeded generator,
// no dependencies). Each row is a chat: a system prompt, a customer's message, and the answer a
// triage model should give, one JSON object {"product","issue","urgency"} that schema.json
// describes. A few rows carry what real exports carry, so the dataset report has something to
// say: exact and near duplicates, personal data (e-mail addresses, phone numbers), an answer too
// short to learn from, and a line that is not JSON.
//
//   node examples/support-tickets/make.mjs            # writes tickets.jsonl beside this file
//   node examples/support-tickets/make.mjs --check    # exits 1 when tickets.jsonl differs
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROWS = 400;
const SYSTEM = 'You triage support tickets. Reply with one JSON object: {"product": ..., "issue": ..., "urgency": "low" | "medium" | "high"}.';

/** mulberry32: a small seeded generator (the same numbers on every platform). */
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet", "smart speaker", "headphones", "smartwatch", "e-reader"];
// Each issue: its label, how customers say it, and how urgent it is unless they say otherwise.
const issues = [
  { label: "no_power", says: ["does not turn on", "is completely dead", "won't power up"], urgency: "high" },
  { label: "restarts", says: ["keeps restarting", "reboots every few minutes", "turns itself off and on"], urgency: "medium" },
  { label: "slow", says: ["is very slow", "takes ages to respond", "lags all the time"], urgency: "low" },
  { label: "error_code", says: ["shows an error code", "displays error E42", "gives me an error message"], urgency: "medium" },
  { label: "connectivity", says: ["loses its connection", "drops the Wi-Fi", "won't stay connected"], urgency: "medium" },
  { label: "noise", says: ["makes a strange noise", "buzzes loudly", "is making a clicking sound"], urgency: "low" },
  { label: "battery", says: ["drains its battery fast", "won't hold a charge", "dies after an hour"], urgency: "medium" },
  { label: "screen", says: ["has a flickering screen", "shows lines on the display", "has a cracked screen"], urgency: "high" },
  { label: "overheating", says: ["gets very hot", "is overheating", "burns to the touch"], urgency: "high" },
  { label: "billing", says: ["was charged twice", "has a wrong invoice", "was billed after I cancelled"], urgency: "medium" },
];
const since = ["since yesterday", "since this morning", "for a week", "after the last update", "since I moved it", "for two days"];
const openers = ["Hi,", "Hello,", "Hey there,", "Good morning,", "", "Help!"];
const urgentWords = ["It's urgent, I need it for work.", "Please hurry, I have a deadline."];
const calmWords = ["No rush.", "Whenever you can."];
const closers = ["Thanks.", "What should I do?", "Can you help?", "Any ideas?", ""];

function row(rand) {
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const product = pick(products);
  const issue = pick(issues);
  let urgency = issue.urgency;
  let tone = "";
  const r = rand();
  if (r < 0.15) {
    tone = pick(urgentWords);
    urgency = "high";
  } else if (r < 0.3) {
    tone = pick(calmWords);
    urgency = "low";
  }
  const text = [pick(openers), `my ${product} ${pick(issue.says)} ${pick(since)}.`, tone, pick(closers)].filter(Boolean).join(" ");
  const user = text.charAt(0).toUpperCase() + text.slice(1);
  return { messages: [{ role: "system", content: SYSTEM }, { role: "user", content: user }, { role: "assistant", content: JSON.stringify({ product, issue: issue.label, urgency }) }] };
}

export function tickets() {
  const rand = generator(20261207);
  const rows = Array.from({ length: ROWS }, () => row(rand));
  const lines = rows.map((r) => JSON.stringify(r));
  // What real exports carry:
  lines.splice(40, 0, lines[12], lines[77]); // exact duplicates
  lines.splice(90, 0, lines[3].replace("Thanks.", "Thank you."), lines[15].replace(" since ", " ever since ")); // near duplicates
  const withPii = (i, extra) => {
    const r = JSON.parse(lines[i]);
    r.messages[1].content += ` ${extra}`;
    lines[i] = JSON.stringify(r);
  };
  withPii(120, "You can reach me at dana.miller@example.com.");
  withPii(200, "Call me back on +1 415 555 0142.");
  withPii(310, "My email is k.osei@example.org if you need it.");
  const short = JSON.parse(lines[250]);
  short.messages[2].content = "ok";
  lines[250] = JSON.stringify(short);
  lines.splice(333, 0, '{"messages": [{"role": "user", "content": "my printer is jammed"}'); // cut off mid-line
  return `${lines.join("\n")}\n`;
}

const here = dirname(fileURLToPath(import.meta.url));
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = join(here, "tickets.jsonl");
  const text = tickets();
  if (process.argv.includes("--check")) {
    const now = readFileSync(file, "utf8");
    if (now !== text) {
      process.stderr.write(`${file} is not what make.mjs makes: run node examples/support-tickets/make.mjs\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(file, text);
    process.stdout.write(`wrote ${file}: ${text.split("\n").length - 1} lines\n`);
  }
}
