import { createHash } from "node:crypto";

/*
 * The subset of Go's text/template and of the Sprig/Helm functions that helm/lathe uses, so the
 * tests can render the chart without a helm binary (Debian ships none, and no npm package renders
 * Helm templates faithfully offline). It follows Go's semantics where the chart relies on them:
 * `{{-`/`-}}` trim whitespace, `range` over a map walks its keys in sorted order, variables are
 * scoped to their block, `and`/`or` stop at the first deciding argument, fields of a missing value
 * are errors (Go: "nil pointer evaluating interface {}.x") while a missing map key is empty, and
 * printing an empty value gives "" (Helm replaces Go's "<no value>").
 *
 * Not supported, and an error when met, so the chart cannot silently drift from what is tested:
 * other functions, method calls, `block`, `break`/`continue`, char constants, complex numbers.
 * Known leniency: Go refuses `eq` between an int literal and a float from values; this renderer
 * compares numbers, so the chart always casts with `int` before comparing.
 */

export type Value = unknown;
type Dict = Record<string, Value>;

export class TemplateError extends Error {
  override readonly name = "TemplateError";
}

/** `fail` and `required` in a template: Helm's "execution error", the message meant for the user. */
export class TemplateFailure extends TemplateError {}

// ---------------------------------------------------------------------------------------------
// Lexing: text and actions

type Segment = { kind: "text"; text: string } | { kind: "action"; body: string; file: string; line: number };

function segments(src: string, file: string): Segment[] {
  const out: Segment[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf("{{", i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, "");
    trimNext = false;
    if (open < 0) {
      out.push({ kind: "text", text });
      break;
    }
    let start = open + 2;
    if (/^-\s/.test(src.slice(start, start + 2))) {
      text = text.replace(/\s+$/, "");
      start += 1;
    }
    out.push({ kind: "text", text });
    const end = findClose(src, start, file);
    let bodyEnd = end;
    if (/\s-$/.test(src.slice(end - 2, end))) {
      trimNext = true;
      bodyEnd = end - 1;
    }
    const line = src.slice(0, open).split("\n").length;
    out.push({ kind: "action", body: src.slice(start, bodyEnd).trim(), file, line });
    i = end + 2;
  }
  return out;
}

/** Index of the `}}` closing the action that starts at `from`, skipping quoted strings and comments. */
function findClose(src: string, from: number, file: string): number {
  let i = from;
  while (i < src.length) {
    const c = src[i];
    if (src.startsWith("/*", i)) {
      const e = src.indexOf("*/", i + 2);
      if (e < 0) break;
      i = e + 2;
    } else if (c === '"') {
      i++;
      while (i < src.length && src[i] !== '"') i += src[i] === "\\" ? 2 : 1;
      i++;
    } else if (c === "`") {
      i = src.indexOf("`", i + 1) + 1;
      if (i === 0) break;
    } else if (src.startsWith("}}", i)) {
      return i;
    } else i++;
  }
  throw new TemplateError(`${file}: unclosed action`);
}

// Tokens inside an action
type Tok =
  | { t: "str"; v: string }
  | { t: "num"; v: number }
  | { t: "bool"; v: boolean }
  | { t: "nil" }
  | { t: "ident"; v: string }
  | { t: "field"; path: string[] } // .a.b (empty path: dot)
  | { t: "var"; name: string; path: string[] } // $x.a
  | { t: "("; }
  | { t: ")"; field: string[] } // a closing paren, with the fields that follow it: (x).a.b
  | { t: "|" }
  | { t: ":=" }
  | { t: "=" }
  | { t: "," };

function tokenize(body: string, where: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  const fieldChain = (): string[] => {
    const path: string[] = [];
    while (body[i] === "." && /[A-Za-z_]/.test(body[i + 1] ?? "")) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(i + 1))!;
      path.push(m[0]);
      i += 1 + m[0].length;
    }
    return path;
  };
  while (i < body.length) {
    const c = body[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < body.length && body[j] !== '"') j += body[j] === "\\" ? 2 : 1;
      toks.push({ t: "str", v: JSON.parse(body.slice(i, j + 1)) as string });
      i = j + 1;
    } else if (c === "`") {
      const j = body.indexOf("`", i + 1);
      toks.push({ t: "str", v: body.slice(i + 1, j) });
      i = j + 1;
    } else if (c === "(") {
      toks.push({ t: "(" });
      i++;
    } else if (c === ")") {
      i++;
      toks.push({ t: ")", field: fieldChain() });
    } else if (c === "|") {
      toks.push({ t: "|" });
      i++;
    } else if (c === ",") {
      toks.push({ t: "," });
      i++;
    } else if (body.startsWith(":=", i)) {
      toks.push({ t: ":=" });
      i += 2;
    } else if (c === "=") {
      toks.push({ t: "=" });
      i++;
    } else if (c === "$") {
      const m = /^\$[A-Za-z0-9_]*/.exec(body.slice(i))!;
      i += m[0].length;
      toks.push({ t: "var", name: m[0], path: fieldChain() });
    } else if (c === ".") {
      if (/[A-Za-z_]/.test(body[i + 1] ?? "")) toks.push({ t: "field", path: fieldChain() });
      else {
        toks.push({ t: "field", path: [] });
        i++;
      }
    } else if (/[-+0-9]/.test(c)) {
      const m = /^[-+]?(0x[0-9a-fA-F]+|\d+(\.\d+)?([eE][-+]?\d+)?)/.exec(body.slice(i));
      if (!m) throw new TemplateError(`${where}: unexpected ${JSON.stringify(c)}`);
      toks.push({ t: "num", v: Number(m[0]) });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(i))!;
      i += m[0].length;
      if (m[0] === "true" || m[0] === "false") toks.push({ t: "bool", v: m[0] === "true" });
      else if (m[0] === "nil") toks.push({ t: "nil" });
      else toks.push({ t: "ident", v: m[0] });
    } else {
      throw new TemplateError(`${where}: unsupported ${JSON.stringify(c)} in action`);
    }
  }
  return toks;
}

// ---------------------------------------------------------------------------------------------
// Parsing

type Operand =
  | { k: "lit"; v: Value }
  | { k: "field"; path: string[] }
  | { k: "var"; name: string; path: string[] }
  | { k: "fn"; name: string }
  | { k: "sub"; pipe: Pipe; path: string[] };
interface Cmd {
  args: Operand[];
}
interface Pipe {
  decl?: { vars: string[]; assign: boolean };
  cmds: Cmd[];
  where: string;
}

type Node =
  | { n: "text"; text: string }
  | { n: "out"; pipe: Pipe }
  | { n: "if"; branches: { pipe: Pipe; body: Node[] }[]; otherwise: Node[] }
  | { n: "range"; pipe: Pipe; body: Node[]; otherwise: Node[] }
  | { n: "with"; pipe: Pipe; body: Node[]; otherwise: Node[] }
  | { n: "template"; name: string; pipe: Pipe | null; where: string };

function parsePipe(toks: Tok[], where: string): Pipe {
  let pos = 0;
  let decl: Pipe["decl"];
  // `$a := …`, `$a, $b := …`, `$a = …`
  const declEnd = toks.findIndex((t) => t.t === ":=" || t.t === "=");
  if (declEnd > 0 && toks.slice(0, declEnd).every((t) => t.t === "var" || t.t === ",")) {
    decl = { vars: toks.slice(0, declEnd).filter((t) => t.t === "var").map((t) => (t as { name: string }).name), assign: toks[declEnd]!.t === "=" };
    pos = declEnd + 1;
  }
  const parseCmds = (stopAtParen: boolean): Cmd[] => {
    const cmds: Cmd[] = [{ args: [] }];
    while (pos < toks.length) {
      const t = toks[pos]!;
      if (t.t === ")") {
        if (!stopAtParen) throw new TemplateError(`${where}: unexpected )`);
        return cmds;
      }
      pos++;
      if (t.t === "|") {
        cmds.push({ args: [] });
        continue;
      }
      const cur = cmds[cmds.length - 1]!;
      switch (t.t) {
        case "str":
        case "num":
        case "bool":
          cur.args.push({ k: "lit", v: t.v });
          break;
        case "nil":
          cur.args.push({ k: "lit", v: null });
          break;
        case "ident":
          cur.args.push({ k: "fn", name: t.v });
          break;
        case "field":
          cur.args.push({ k: "field", path: t.path });
          break;
        case "var":
          cur.args.push({ k: "var", name: t.name, path: t.path });
          break;
        case "(": {
          const inner = parseCmds(true);
          const close = toks[pos++];
          if (!close || close.t !== ")") throw new TemplateError(`${where}: unclosed (`);
          cur.args.push({ k: "sub", pipe: { cmds: inner, where }, path: close.field });
          break;
        }
        default:
          throw new TemplateError(`${where}: unexpected ${t.t}`);
      }
    }
    if (stopAtParen) throw new TemplateError(`${where}: unclosed (`);
    return cmds;
  };
  const cmds = parseCmds(false);
  if (cmds.some((c) => c.args.length === 0)) throw new TemplateError(`${where}: empty command in pipeline`);
  return { decl, cmds, where };
}

interface Parsed {
  nodes: Node[];
  defines: Map<string, Node[]>;
}

function parse(src: string, file: string): Parsed {
  const segs = segments(src, file);
  const defines = new Map<string, Node[]>();
  let pos = 0;
  // Parses until one of `stops` (else, end) at this level; returns the nodes and the stop met.
  const block = (stops: string[]): { nodes: Node[]; stop: string; rest: string; where: string } => {
    const nodes: Node[] = [];
    while (pos < segs.length) {
      const s = segs[pos++]!;
      if (s.kind === "text") {
        if (s.text !== "") nodes.push({ n: "text", text: s.text });
        continue;
      }
      const where = `${s.file}:${s.line}`;
      if (s.body.startsWith("/*")) continue;
      const m = /^([a-z]+)\b\s*([\s\S]*)$/.exec(s.body);
      const word = m?.[1] ?? "";
      const rest = m?.[2] ?? "";
      if (stops.includes(word)) return { nodes, stop: word, rest, where };
      if (word === "if") {
        const branches: { pipe: Pipe; body: Node[] }[] = [];
        let cond = rest;
        let otherwise: Node[] = [];
        for (;;) {
          const b = block(["else", "end"]);
          branches.push({ pipe: parsePipe(tokenize(cond, where), where), body: b.nodes });
          if (b.stop === "end") break;
          const elseIf = /^if\b\s*([\s\S]*)$/.exec(b.rest);
          if (elseIf) {
            cond = elseIf[1]!;
            continue;
          }
          otherwise = block(["end"]).nodes;
          break;
        }
        nodes.push({ n: "if", branches, otherwise });
      } else if (word === "range" || word === "with") {
        const b = block(["else", "end"]);
        const otherwise = b.stop === "else" ? block(["end"]).nodes : [];
        nodes.push({ n: word, pipe: parsePipe(tokenize(rest, where), where), body: b.nodes, otherwise });
      } else if (word === "define") {
        const name = tokenize(rest, where)[0];
        if (!name || name.t !== "str") throw new TemplateError(`${where}: define needs a name`);
        defines.set(name.v, block(["end"]).nodes);
      } else if (word === "template") {
        const toks = tokenize(rest, where);
        const name = toks[0];
        if (!name || name.t !== "str") throw new TemplateError(`${where}: template needs a name`);
        nodes.push({ n: "template", name: name.v, pipe: toks.length > 1 ? parsePipe(toks.slice(1), where) : null, where });
      } else if (["else", "end", "block", "break", "continue"].includes(word)) {
        throw new TemplateError(`${where}: unexpected {{${word}}}`);
      } else {
        nodes.push({ n: "out", pipe: parsePipe(tokenize(s.body, where), where) });
      }
    }
    if (stops.length > 0) throw new TemplateError(`${file}: missing {{end}}`);
    return { nodes, stop: "", rest: "", where: file };
  };
  const { nodes } = block([]);
  return { nodes, defines };
}

// ---------------------------------------------------------------------------------------------
// Values

const isMap = (v: Value): v is Dict => typeof v === "object" && v !== null && !Array.isArray(v);

/** Go's truth: false, 0, nil, and empty strings, lists and maps are false. */
export function truthy(v: Value): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

/** How `{{ x }}` prints a value (Go's fmt %v; nil as Helm prints it: nothing). */
export function show(v: Value): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(show).join(" ")}]`;
  if (isMap(v)) return `map[${Object.keys(v).sort().map((k) => `${k}:${show(v[k])}`).join(" ")}]`;
  return String(v);
}

function sortKeys(v: Value): Value {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (isMap(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

function toInt(v: Value): number {
  if (typeof v === "number") return Math.trunc(v);
  if (typeof v === "string" && /^\s*-?\d+(\.\d+)?\s*$/.test(v)) return Math.trunc(Number(v));
  if (typeof v === "boolean") return v ? 1 : 0;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Execution

interface Scope {
  vars: Map<string, Value>;
  parent: Scope | null;
}

function lookupVar(scope: Scope, name: string, where: string): Value {
  for (let s: Scope | null = scope; s; s = s.parent) if (s.vars.has(name)) return s.vars.get(name);
  throw new TemplateError(`${where}: undefined variable ${name}`);
}

function setVar(scope: Scope, name: string, v: Value, where: string): void {
  for (let s: Scope | null = scope; s; s = s.parent) {
    if (s.vars.has(name)) {
      s.vars.set(name, v);
      return;
    }
  }
  throw new TemplateError(`${where}: undefined variable ${name}`);
}

function walk(v: Value, path: string[], where: string, what: string): Value {
  let cur = v;
  for (const [i, key] of path.entries()) {
    if (cur === null || cur === undefined) throw new TemplateError(`${where}: nil pointer evaluating interface {}.${key} (${what}.${path.slice(0, i + 1).join(".")})`);
    if (!isMap(cur)) throw new TemplateError(`${where}: can't evaluate field ${key} in type ${Array.isArray(cur) ? "slice" : typeof cur}`);
    cur = cur[key];
  }
  return cur ?? null;
}

/** Options a render takes besides the data: YAML and a chart's templates. */
export interface TemplateEnv {
  /** Helm's toYaml: block YAML, sorted keys, without the final newline. */
  toYaml(v: Value): string;
  fromYaml(s: string): Value;
}

/** A set of templates (a chart's files) sharing their `define`s, rendered as Helm renders them. */
export class TemplateSet {
  private readonly files = new Map<string, Node[]>();
  private readonly defines = new Map<string, Node[]>();

  constructor(private readonly env: TemplateEnv) {}

  /** Adds a file; its own name is a template too (Helm: `include (print $.Template.BasePath "/x.yaml") $`). */
  add(name: string, src: string): void {
    const p = parse(src, name);
    this.files.set(name, p.nodes);
    this.defines.set(name, p.nodes);
    for (const [k, v] of p.defines) this.defines.set(k, v);
  }

  /** Renders one file with `data` as its dot. `templateName` is what `.Template.Name` gives. */
  render(name: string, data: Dict): string {
    const nodes = this.files.get(name);
    if (!nodes) throw new TemplateError(`no template ${name}`);
    const withTemplate = { ...data, Template: { ...(isMap(data.Template) ? data.Template : {}), Name: name } };
    return this.exec(nodes, withTemplate, { vars: new Map([["$", withTemplate]]), parent: null });
  }

  private exec(nodes: Node[], dot: Value, scope: Scope): string {
    let out = "";
    for (const node of nodes) {
      switch (node.n) {
        case "text":
          out += node.text;
          break;
        case "out": {
          const v = this.pipe(node.pipe, dot, scope);
          if (!node.pipe.decl) out += show(v);
          break;
        }
        case "if": {
          const inner: Scope = { vars: new Map(), parent: scope };
          const hit = node.branches.find((b) => truthy(this.pipe(b.pipe, dot, inner)));
          out += this.exec(hit ? hit.body : node.otherwise, dot, inner);
          break;
        }
        case "with": {
          const inner: Scope = { vars: new Map(), parent: scope };
          const v = this.pipe(node.pipe, dot, inner);
          out += truthy(v) ? this.exec(node.body, v, inner) : this.exec(node.otherwise, dot, inner);
          break;
        }
        case "range": {
          const decl = node.pipe.decl;
          const v = this.pipe({ ...node.pipe, decl: undefined }, dot, scope);
          const items: [Value, Value][] = Array.isArray(v)
            ? v.map((x, i) => [i, x])
            : isMap(v)
              ? Object.keys(v).sort().map((k) => [k, v[k]])
              : typeof v === "number"
                ? Array.from({ length: v }, (_, i) => [i, i])
                : v === null || v === undefined
                  ? []
                  : (() => {
                      throw new TemplateError(`${node.pipe.where}: range can't iterate over ${show(v)}`);
                    })();
          if (items.length === 0) {
            out += this.exec(node.otherwise, dot, { vars: new Map(), parent: scope });
            break;
          }
          for (const [k, x] of items) {
            const inner: Scope = { vars: new Map(), parent: scope };
            if (decl?.vars.length === 1) inner.vars.set(decl.vars[0]!, x);
            if (decl?.vars.length === 2) {
              inner.vars.set(decl.vars[0]!, k);
              inner.vars.set(decl.vars[1]!, x);
            }
            out += this.exec(node.body, x, inner);
          }
          break;
        }
        case "template": {
          const body = this.defines.get(node.name);
          if (!body) throw new TemplateError(`${node.where}: no template ${JSON.stringify(node.name)}`);
          const d = node.pipe ? this.pipe(node.pipe, dot, scope) : null;
          out += this.exec(body, d, { vars: new Map([["$", d]]), parent: null });
          break;
        }
      }
    }
    return out;
  }

  private pipe(p: Pipe, dot: Value, scope: Scope): Value {
    let v: Value = undefined;
    let piped = false;
    for (const cmd of p.cmds) {
      v = this.cmd(cmd, dot, scope, p.where, piped ? [v] : []);
      piped = true;
    }
    if (p.decl) {
      if (p.decl.assign) setVar(scope, p.decl.vars[0]!, v, p.where);
      else scope.vars.set(p.decl.vars[0]!, v);
    }
    return v;
  }

  private operand(o: Operand, dot: Value, scope: Scope, where: string): Value {
    switch (o.k) {
      case "lit":
        return o.v;
      case "field":
        return walk(dot, o.path, where, "");
      case "var":
        return walk(lookupVar(scope, o.name, where), o.path, where, o.name);
      case "sub":
        return walk(this.pipe(o.pipe, dot, scope), o.path, where, "(…)");
      case "fn":
        return this.call(o.name, [], [], dot, scope, where);
    }
  }

  private cmd(cmd: Cmd, dot: Value, scope: Scope, where: string, piped: Value[]): Value {
    const [head, ...rest] = cmd.args;
    if (!head) throw new TemplateError(`${where}: empty command`);
    if (head.k === "fn") return this.call(head.name, rest, piped, dot, scope, where);
    if (rest.length > 0 || piped.length > 0) throw new TemplateError(`${where}: can't give arguments to a non-function`);
    return this.operand(head, dot, scope, where);
  }

  private call(name: string, argOps: Operand[], piped: Value[], dot: Value, scope: Scope, where: string): Value {
    const lazy = (i: number): Value => (i < argOps.length ? this.operand(argOps[i]!, dot, scope, where) : piped[i - argOps.length]);
    const n = argOps.length + piped.length;
    if (name === "and" || name === "or") {
      let last: Value = null;
      for (let i = 0; i < n; i++) {
        last = lazy(i);
        if (name === "and" ? !truthy(last) : truthy(last)) return last;
      }
      return last;
    }
    const a = Array.from({ length: n }, (_, i) => lazy(i));
    const fn = this.functions[name];
    if (!fn) throw new TemplateError(`${where}: function ${JSON.stringify(name)} not defined (not in the subset this renderer supports)`);
    try {
      return fn(a, dot, where);
    } catch (err) {
      if (err instanceof TemplateError) throw err;
      throw new TemplateError(`${where}: error calling ${name}: ${(err as Error).message}`);
    }
  }

  private include(name: string, data: Value, where: string): string {
    const body = this.defines.get(name);
    if (!body) throw new TemplateError(`${where}: no template ${JSON.stringify(name)} to include`);
    return this.exec(body, data, { vars: new Map([["$", data]]), parent: null });
  }

  private readonly functions: Record<string, (a: Value[], dot: Value, where: string) => Value> = {
    include: ([name, data], _d, where) => this.include(String(name), data, where),
    tpl: ([src, data], _d, where) => {
      const t = new TemplateSet(this.env);
      for (const [k, v] of this.defines) t.defines.set(k, v);
      t.add(`${where}(tpl)`, String(src));
      return t.exec(t.files.get(`${where}(tpl)`)!, data, { vars: new Map([["$", data]]), parent: null });
    },
    required: ([msg, v]) => {
      if (v === null || v === undefined || v === "") throw new TemplateFailure(String(msg));
      return v;
    },
    fail: ([msg]) => {
      throw new TemplateFailure(String(msg));
    },
    default: ([d, v]) => (truthy(v) ? v : d),
    empty: ([v]) => !truthy(v),
    coalesce: (a) => a.find(truthy) ?? null,
    ternary: ([a, b, c]) => (truthy(c) ? a : b),
    not: ([v]) => !truthy(v),
    eq: ([x, ...ys]) => ys.some((y) => x === y),
    ne: ([x, y]) => x !== y,
    lt: ([x, y]) => (x as number) < (y as number),
    le: ([x, y]) => (x as number) <= (y as number),
    gt: ([x, y]) => (x as number) > (y as number),
    ge: ([x, y]) => (x as number) >= (y as number),
    len: ([v]) => (typeof v === "string" || Array.isArray(v) ? v.length : isMap(v) ? Object.keys(v).length : 0),
    index: ([v, ...keys]) => keys.reduce<Value>((cur, k) => (Array.isArray(cur) ? cur[k as number] : isMap(cur) ? cur[String(k)] : null) ?? null, v),
    print: (a) => a.map((x, i) => (i > 0 && typeof x !== "string" && typeof a[i - 1] !== "string" ? " " : "") + show(x)).join(""),
    printf: ([format, ...args]) => {
      let i = 0;
      return String(format).replace(/%([-+# 0]*\d*)([sdvqtf%])/g, (_m, _flags: string, verb: string) => {
        if (verb === "%") return "%";
        const x = args[i++];
        if (verb === "q") return JSON.stringify(show(x));
        if (verb === "d") return String(toInt(x));
        return show(x);
      });
    },
    quote: (a) => a.filter((x) => x !== null && x !== undefined).map((x) => JSON.stringify(show(x))).join(" "),
    squote: (a) => a.filter((x) => x !== null && x !== undefined).map((x) => `'${show(x)}'`).join(" "),
    toString: ([v]: Value[]) => show(v),
    int: ([v]) => toInt(v),
    int64: ([v]) => toInt(v),
    add: (a) => a.reduce<number>((s, x) => s + toInt(x), 0),
    sub: ([x, y]) => toInt(x) - toInt(y),
    mul: (a) => a.reduce<number>((s, x) => s * toInt(x), 1),
    div: ([x, y]) => Math.trunc(toInt(x) / toInt(y)),
    mod: ([x, y]) => toInt(x) % toInt(y),
    max: (a) => Math.max(...a.map(toInt)),
    min: (a) => Math.min(...a.map(toInt)),
    upper: ([s]) => show(s).toUpperCase(),
    lower: ([s]) => show(s).toLowerCase(),
    trim: ([s]) => show(s).trim(),
    trunc: ([n, s]) => {
      const str = show(s);
      const k = toInt(n);
      return k >= 0 ? str.slice(0, k) : str.slice(Math.max(0, str.length + k));
    },
    trimSuffix: ([suffix, s]) => (show(s).endsWith(show(suffix)) && show(suffix) !== "" ? show(s).slice(0, -show(suffix).length) : show(s)),
    trimPrefix: ([prefix, s]) => (show(s).startsWith(show(prefix)) ? show(s).slice(show(prefix).length) : show(s)),
    contains: ([sub, s]) => show(s).includes(show(sub)),
    hasPrefix: ([p, s]) => show(s).startsWith(show(p)),
    hasSuffix: ([p, s]) => show(s).endsWith(show(p)),
    replace: ([from, to, s]) => show(s).split(show(from)).join(show(to)),
    join: ([sep, list]) => (Array.isArray(list) ? list.map(show).join(show(sep)) : show(list)),
    b64enc: ([s]) => Buffer.from(show(s)).toString("base64"),
    sha256sum: ([s]) => createHash("sha256").update(show(s)).digest("hex"),
    indent: ([n, s]) => show(s).split("\n").map((l) => " ".repeat(toInt(n)) + l).join("\n"),
    nindent: ([n, s]) => "\n" + show(s).split("\n").map((l) => " ".repeat(toInt(n)) + l).join("\n"),
    dict: (a) => {
      const d: Dict = {};
      for (let i = 0; i < a.length; i += 2) d[show(a[i])] = a[i + 1] ?? null;
      return d;
    },
    list: (a) => [...a],
    append: ([l, v]) => [...((l as Value[]) ?? []), v],
    concat: (a) => a.flatMap((l) => (Array.isArray(l) ? l : [])),
    get: ([d, k]) => (isMap(d) && show(k) in d ? d[show(k)] : ""),
    hasKey: ([d, k]) => isMap(d) && show(k) in d,
    keys: (a) => a.flatMap((d) => (isMap(d) ? Object.keys(d) : [])),
    sortAlpha: ([l]) => (Array.isArray(l) ? l.map(show).sort() : []),
    merge: ([dst, ...srcs]) => {
      const out = { ...(dst as Dict) };
      for (const s of srcs) for (const [k, v] of Object.entries((s as Dict) ?? {})) if (!(k in out)) out[k] = v;
      return out;
    },
    kindIs: ([kind, v]) => kindOf(v) === kind,
    regexMatch: ([re, s]) => new RegExp(show(re)).test(show(s)),
    toYaml: ([v]) => this.env.toYaml(v),
    fromYaml: ([s]) => this.env.fromYaml(show(s)),
    toJson: ([v]) => JSON.stringify(sortKeys(v ?? null)),
    // `helm template` has no cluster: lookup finds nothing.
    lookup: () => ({}),
  };
}

function kindOf(v: Value): string {
  if (v === null || v === undefined) return "invalid";
  if (Array.isArray(v)) return "slice";
  if (isMap(v)) return "map";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float64";
  return typeof v === "boolean" ? "bool" : "string";
}
