/**
 * The interactive part of `lathe synth review`: one pending review item at a time on the
 * terminal's alternate screen, decided with a key. Plain ANSI escape codes and raw-mode stdin; the
 * caller fetches the items and makes the calls.
 */
import { emitKeypressEvents } from "node:readline";
import type { ReadStream, WriteStream } from "node:tty";
import { chatRoles } from "@lathe/kit";
import type { GenerationJob, ReviewItem } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { lastId } from "../names.js";

/** What the review calls on the server; each resolves once the decision is stored. */
export interface ReviewDecisions {
  approve(item: ReviewItem): Promise<void>;
  reject(item: ReviewItem, reason: string): Promise<void>;
}

/** What a session decided. Items skipped or never reached stay pending. */
export interface ReviewTally {
  approved: number;
  rejected: number;
  skipped: number;
  /** Of the items the session was given, those still pending at its end. */
  pending: number;
  /** Whether the reviewer quit before the last item. */
  quit: boolean;
}

/** One key as readline's keypress event describes it, or a change of the terminal's size. */
interface Key {
  /** The character typed, when it is one. */
  text: string | undefined;
  name: string | undefined;
  ctrl: boolean;
}

/** Keys in the order they were pressed, handed out one `await` at a time. */
class KeyQueue {
  private readonly queue: Key[] = [];
  private waiting: ((k: Key) => void) | undefined;

  push(k: Key): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (w) w(k);
    else this.queue.push(k);
  }

  next(): Promise<Key> {
    const k = this.queue.shift();
    return k ? Promise.resolve(k) : new Promise((resolve) => (this.waiting = resolve));
  }

  /** Drops the keys pressed so far: a key typed while a decision was being saved was typed at a screen that is gone. */
  clear(): void {
    this.queue.length = 0;
  }
}

const ESC = "\x1b[";

/** ANSI styles, or none under NO_COLOR (https://no-color.org). */
function styles(env: NodeJS.ProcessEnv) {
  const on = env["NO_COLOR"] === undefined || env["NO_COLOR"] === "";
  const sgr = (code: string) => (s: string) => (on ? `${ESC}${code}m${s}${ESC}0m` : s);
  return { bold: sgr("1"), dim: sgr("2"), red: sgr("31"), green: sgr("32"), yellow: sgr("33"), cyan: sgr("36") };
}

/**
 * A model's text made safe to print: control characters (which a teacher may emit, and which
 * could move the cursor or retitle the terminal) become U+FFFD; tabs become two spaces.
 */
export function printable(text: string): string {
  return text
    .replace(/\r\n?/g, "\n")
    .replace(/\t/g, "  ")
    .replace(/[\p{Cc}\u2028\u2029]/gu, (c) => (c === "\n" ? c : "\uFFFD"));
}

/** The text's lines, each cut at spaces into pieces of at most `width` characters (a longer word is split). */
export function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  for (const line of printable(text).split("\n")) {
    let rest = Array.from(line.trimEnd());
    if (rest.length === 0) out.push("");
    while (rest.length > 0) {
      if (rest.length <= width) {
        out.push(rest.join(""));
        break;
      }
      const space = rest.lastIndexOf(" ", width);
      const cut = space > 0 ? space : width;
      out.push(rest.slice(0, cut).join("").trimEnd());
      rest = rest.slice(space > 0 ? cut + 1 : cut);
    }
  }
  return out;
}

/** At most `width` characters of a line, `…` where it was cut. */
const fit = (line: string, width: number) => {
  const chars = Array.from(line);
  return chars.length <= width ? line : `${chars.slice(0, Math.max(0, width - 1)).join("")}…`;
};

/**
 * Shows `items` one at a time and applies the reviewer's keys: `a` approves, `r` asks for a reason
 * on one line and rejects, `s` skips, `q` (or Ctrl-C) quits, the arrow keys scroll a long example.
 * Restores the terminal however it ends.
 */
export async function reviewInteractively(job: GenerationJob, items: readonly ReviewItem[], decide: ReviewDecisions, input: ReadStream, output: WriteStream, env: NodeJS.ProcessEnv = process.env): Promise<ReviewTally> {
  const s = styles(env);
  const keys = new KeyQueue();
  const onKey = (text: string | undefined, key: { name?: string; ctrl?: boolean } | undefined) => keys.push({ text, name: key?.name, ctrl: key?.ctrl === true });
  const onResize = () => keys.push({ text: undefined, name: "resize", ctrl: false });
  const onEnd = () => keys.push({ text: undefined, name: "end", ctrl: false });
  const tally: ReviewTally = { approved: 0, rejected: 0, skipped: 0, pending: items.length, quit: false };

  emitKeypressEvents(input);
  input.setRawMode(true);
  input.on("keypress", onKey);
  input.on("end", onEnd);
  output.on("resize", onResize);
  input.resume();
  // The alternate screen keeps the reviewer's scrollback as it was; the cursor is hidden but while typing a reason.
  output.write(`${ESC}?1049h${ESC}?25l`);

  const seeded = job.seedDatasetVersion !== "";
  let status = "";
  let scroll = 0;
  /** The reason being typed for a rejection, or undefined when not asking for one. */
  let reason: string | undefined;

  const render = (i: number) => {
    const item = items[i]!;
    const width = Math.max(20, output.columns || 80);
    const height = Math.max(12, output.rows || 24);
    const body: string[] = [];
    for (const m of item.example?.messages ?? []) {
      const role = chatRoles.name(m.role) ?? `role ${m.role}`;
      body.push(s.bold(role === "user" ? s.cyan(role.toUpperCase()) : role === "assistant" ? s.green(role.toUpperCase()) : role.toUpperCase()));
      for (const l of wrap(m.content, width - 2)) body.push(`  ${l}`);
    }
    const room = height - 7;
    scroll = Math.max(0, Math.min(scroll, body.length - room));
    const shown = body.slice(scroll, scroll + room);
    const similarity = seeded ? `similarity to the seed set ${item.maxSeedSimilarity.toFixed(2)}` : "no seed set";
    const rule = s.dim("─".repeat(width));
    const position = `item ${i + 1} of ${items.length}`;
    const lines = [
      `${s.bold(position)}  ${fit(`${job.name}/reviewItems/${lastId(item.name)}`, width - position.length - 2)}`,
      s.dim(fit(`task: ${printable(job.taskDescription).replace(/\s+/g, " ").trim()}`, width)),
      s.dim(similarity),
      rule,
      ...shown,
      ...Array.from({ length: room - shown.length }, () => ""),
      rule,
    ];
    if (reason === undefined) {
      const more = body.length > room ? `   ${s.bold("↑/↓")} scroll (lines ${scroll + 1}–${scroll + shown.length} of ${body.length})` : "";
      lines.push(status, `${s.bold("a")} approve   ${s.bold("r")} reject   ${s.bold("s")} skip   ${s.bold("q")} quit${more}`);
    } else {
      const ask = "reason for rejecting (Enter to submit, Esc to go back): ";
      const room = Math.max(10, width - ask.length - 1);
      const chars = Array.from(reason);
      lines.push("", `${s.bold(ask)}${chars.length > room ? `…${chars.slice(chars.length - room + 1).join("")}` : reason}`);
    }
    output.write(`${ESC}H${ESC}2J${lines.join("\r\n")}${reason === undefined ? `${ESC}?25l` : `${ESC}?25h`}`);
  };

  /** The reason typed after `r`, or undefined when the reviewer went back (Esc) or quit. */
  const askReason = async (i: number): Promise<string | undefined> => {
    reason = "";
    try {
      for (;;) {
        render(i);
        const k = await keys.next();
        if (k.name === "end" || (k.ctrl && k.name === "c")) {
          tally.quit = true;
          return undefined;
        }
        if (k.name === "escape") return undefined;
        if (k.name === "return" || k.name === "enter") return reason;
        if (k.name === "backspace") reason = Array.from(reason).slice(0, -1).join("");
        else if (k.ctrl && k.name === "u") reason = "";
        else if (k.text !== undefined && !k.ctrl && !/[\p{Cc}]/u.test(k.text)) reason += k.text;
      }
    } finally {
      reason = undefined;
    }
  };

  try {
    let i = 0;
    while (i < items.length && !tally.quit) {
      render(i);
      const k = await keys.next();
      const item = items[i]!;
      const key = k.ctrl ? `ctrl-${k.name}` : (k.text ?? k.name);
      if (key === "q" || key === "Q" || key === "ctrl-c" || k.name === "end") tally.quit = true;
      else if (k.name === "up" || k.name === "k") scroll -= 1;
      else if (k.name === "down" || k.name === "j") scroll += 1;
      else if (k.name === "pageup") scroll -= Math.max(1, (output.rows || 24) - 8);
      else if (k.name === "pagedown" || k.name === "space") scroll += Math.max(1, (output.rows || 24) - 8);
      else if (key === "s" || key === "S") {
        tally.skipped += 1;
        status = s.yellow(`skipped item ${i + 1}: it stays pending`);
        i += 1;
        scroll = 0;
      } else if (key === "a" || key === "A" || key === "r" || key === "R") {
        const approve = key === "a" || key === "A";
        const why = approve ? "" : await askReason(i);
        if (why === undefined) {
          status = tally.quit ? status : s.dim("not rejected");
          continue;
        }
        status = s.dim(approve ? "approving…" : "rejecting…");
        render(i);
        try {
          if (approve) await decide.approve(item);
          else await decide.reject(item, why);
          if (approve) tally.approved += 1;
          else tally.rejected += 1;
          tally.pending -= 1;
          status = approve ? s.green(`approved item ${i + 1}`) : s.red(`rejected item ${i + 1}${why ? `: ${printable(why)}` : ""}`);
          i += 1;
          scroll = 0;
        } catch (err) {
          // Nothing was decided: say why, and leave the reviewer on the item to try again or go on.
          status = s.red(`could not ${approve ? "approve" : "reject"} item ${i + 1}: ${printable((err as Error).message)}`);
        }
        keys.clear();
      }
    }
  } finally {
    input.off("keypress", onKey);
    input.off("end", onEnd);
    output.off("resize", onResize);
    input.setRawMode(false);
    input.pause();
    output.write(`${ESC}?25h${ESC}?1049l`);
  }
  return tally;
}
